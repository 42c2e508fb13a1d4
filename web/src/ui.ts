// The page's DOM: notices, the two forms, tiles, the lobby list and the controls. Text only
// through textContent, never HTML: names come from other participants.

import { Track } from 'livekit-client';

import { type Call, displayName } from './call';
import type { ParticipantView } from './hook';

function el<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`the page lacks #${id}`);
  return e as T;
}

export class Ui {
  private readonly tiles = new Map<string, HTMLElement>();

  setRoom(name: string): void {
    el('room-name').textContent = name;
    document.title = name ? `${name} · Conclave` : 'Conclave';
  }

  notice(text: string, problem = false): void {
    const n = el('notice');
    n.textContent = text;
    n.classList.toggle('problem', problem);
  }

  /** `mixed`: this page encrypts, but plays someone who does not (a Preferred meeting). */
  encryption(state: 'on' | 'mixed' | 'off' | 'unknown'): void {
    const b = el('e2ee-state');
    b.className = `e2ee ${state}`;
    b.textContent = {
      on: 'End-to-end encrypted',
      mixed: 'Not everyone is end-to-end encrypted',
      off: 'NOT end-to-end encrypted',
      unknown: 'Not connected',
    }[state];
  }

  /** Asks a guest for a display name. */
  askName(): Promise<string> {
    const form = el<HTMLFormElement>('name-form');
    form.hidden = false;
    el<HTMLInputElement>('name-input').focus();
    return new Promise((resolve) => {
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        const name = el<HTMLInputElement>('name-input').value.trim();
        if (!name) return;
        form.hidden = true;
        resolve(name);
      });
    });
  }

  /** Asks for the passphrase; resolves `undefined` only when joining unencrypted is offered
   * (a Preferred meeting) and chosen. */
  askKey(allowUnencrypted: boolean): Promise<string | undefined> {
    const form = el<HTMLFormElement>('key-form');
    const plain = el<HTMLButtonElement>('join-unencrypted');
    form.hidden = false;
    plain.hidden = !allowUnencrypted;
    return new Promise((resolve) => {
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        const input = el<HTMLInputElement>('key-input');
        const key = input.value;
        if (!key) return;
        input.value = '';
        form.hidden = true;
        resolve(key);
      });
      plain.addEventListener('click', () => {
        form.hidden = true;
        resolve(undefined);
      });
    });
  }

  controls(call: Call | undefined, onLeave: () => void, onError: (e: unknown) => void): void {
    const footer = el('controls');
    footer.hidden = !call;
    if (!call || footer.dataset.wired) return;
    footer.dataset.wired = '1';
    const wire = (id: string, source: 'camera' | 'microphone' | 'screen', onText: string, offText: string) => {
      const b = el<HTMLButtonElement>(id);
      b.addEventListener('click', () => {
        call.toggle(source).then((on) => (b.textContent = on ? onText : offText), onError);
      });
    };
    wire('toggle-mic', 'microphone', 'Mute', 'Unmute');
    wire('toggle-camera', 'camera', 'Stop camera', 'Start camera');
    wire('toggle-screen', 'screen', 'Stop sharing', 'Share screen');
    el('leave').addEventListener('click', onLeave);
  }

  /** Guests waiting in the lobby, with Admit and Deny for a moderator. */
  waiting(list: ParticipantView[], act: (identity: string, admit: boolean) => void): void {
    const section = el('waiting');
    const ul = el('waiting-list');
    section.hidden = list.length === 0;
    ul.replaceChildren(
      ...list.map((p) => {
        const li = document.createElement('li');
        li.dataset.identity = p.identity;
        const name = document.createElement('span');
        name.textContent = p.name;
        const admit = document.createElement('button');
        admit.textContent = 'Admit';
        admit.dataset.admit = p.identity;
        admit.addEventListener('click', () => act(p.identity, true));
        const deny = document.createElement('button');
        deny.textContent = 'Deny';
        deny.dataset.deny = p.identity;
        deny.addEventListener('click', () => act(p.identity, false));
        li.append(name, admit, deny);
        return li;
      }),
    );
  }

  /** One tile per participant (the local one first); media elements are moved, not rebuilt. */
  render(call: Call | undefined, views: ParticipantView[]): void {
    const container = el('tiles');
    if (!call) {
      container.replaceChildren();
      this.tiles.clear();
      return;
    }
    const wanted: HTMLElement[] = [this.localTile(call)];
    const audio = el('audio');
    for (const v of views.filter((v) => !v.lobby)) {
      const tile = this.tile(v.identity);
      tile.className = `tile ${v.tile}`;
      for (const t of v.tracks) {
        const media = t.played ? call.element(t.sid) : undefined;
        if (!media) continue;
        const home = t.kind === Track.Kind.Audio ? audio : tile;
        if (media.parentElement !== home) home.append(media);
      }
      this.label(tile, 'name', v.name);
      this.label(tile, 'lock', v.tracks.length > 0 && v.tracks.every((t) => t.encrypted) ? 'encrypted' : '');
      this.label(tile, 'message', v.message || (v.tile === 'no-media' ? 'No camera' : ''));
      wanted.push(tile);
    }
    for (const [id, tile] of this.tiles) {
      if (!wanted.includes(tile)) {
        tile.remove();
        this.tiles.delete(id);
      }
    }
    container.replaceChildren(...wanted);
  }

  private localTile(call: Call): HTMLElement {
    const tile = this.tile('\u0000local');
    tile.className = 'tile local';
    const local = call.room.localParticipant;
    const cam = local.getTrackPublication(Track.Source.Camera)?.track;
    const video = tile.querySelector('video');
    if (cam && (!video || video.srcObject !== cam.mediaStream)) {
      video?.remove();
      const v = cam.attach() as HTMLVideoElement;
      v.muted = true;
      tile.prepend(v);
    } else if (!cam) {
      video?.remove();
    }
    this.label(tile, 'name', `${displayName(local)} (you)`);
    return tile;
  }

  private tile(identity: string): HTMLElement {
    let tile = this.tiles.get(identity);
    if (!tile) {
      tile = document.createElement('div');
      tile.dataset.identity = identity;
      this.tiles.set(identity, tile);
    }
    return tile;
  }

  private label(tile: HTMLElement, cls: string, text: string): void {
    let span = tile.querySelector<HTMLElement>(`:scope > .${cls}`);
    if (!text) {
      span?.remove();
      return;
    }
    if (!span) {
      span = document.createElement('span');
      span.className = cls;
      tile.append(span);
    }
    span.textContent = text;
  }
}
