// One call: a LiveKit Room with end-to-end encryption switched on before it connects, and the
// rules the page keeps whatever the server or other clients do:
// - a page with the key publishes nothing unless the room encrypts (a Required meeting's page
//   always has the key; only a Preferred meeting's may join without one, openly);
// - a remote track the publisher did not encrypt is not subscribed, so never played, and its
//   tile says why (in a Required meeting); in a Preferred meeting it is played and its tile says
//   it is not encrypted;
// - a page without the key (a Preferred meeting joined unencrypted) does not subscribe to
//   encrypted tracks, which it could only render as noise, and says why;
// - a participant whose media cannot be decrypted shows "cannot decrypt", not a black tile.

import {
  DisconnectReason,
  ExternalE2EEKeyProvider,
  isE2EESupported,
  LogLevel,
  type Participant,
  type RemoteParticipant,
  type RemoteTrack,
  RemoteTrackPublication,
  Room,
  RoomEvent,
  setLogLevel,
  Track,
} from 'livekit-client';

import type { InboundStats, LocalView, ParticipantView, TileState, TrackView } from './hook';
import type { Policy } from './link';

/** How long a Required meeting's page waits for its own encryption before it refuses to publish. */
const ENCRYPTION_WAIT_MS = 10_000;

/** The participant attribute `conclave web` sets on a guest waiting in the lobby. */
export const LOBBY_ATTRIBUTE = 'conclave.lobby';

export interface CallEvents {
  /** Something the page shows changed. */
  changed(): void;
  /** The call ended; `reason` is LiveKit's disconnect reason. */
  ended(reason: string): void;
}

interface RemoteInfo {
  decryptErrors: number;
  lastErrorAt: number;
  lastFrameAt: number;
  framesPresented: number;
  encryptionStatus: boolean | undefined;
}

export class Call {
  readonly room: Room;
  readonly encrypted: boolean;
  private readonly info = new Map<string, RemoteInfo>();
  private readonly played = new Map<string, HTMLMediaElement>();
  private publishing = false;

  constructor(
    private readonly policy: Policy,
    key: string | undefined,
    private readonly events: CallEvents,
  ) {
    setLogLevel(LogLevel.warn);
    this.encrypted = key !== undefined;
    if (this.encrypted && !isE2EESupported()) {
      throw new Error('this browser cannot encrypt calls end to end; use a current Chrome, Edge, Firefox or Safari');
    }
    if (!this.encrypted && policy.e2ee === 'Required') {
      throw new Error('this meeting requires end-to-end encryption and no key was given');
    }
    const keyProvider = new ExternalE2EEKeyProvider();
    this.room = new Room({
      adaptiveStream: false,
      dynacast: false,
      ...(this.encrypted
        ? { encryption: { keyProvider, worker: new Worker('/e2ee-worker.js') } }
        : {}),
    });
    this.keyReady = this.encrypted && key !== undefined ? keyProvider.setKey(key) : Promise.resolve();
    this.listen();
  }

  private readonly keyReady: Promise<void>;

  /** Connects with E2EE already on, so the first frame sent or received is encrypted. */
  async connect(url: string, token: string): Promise<void> {
    if (this.encrypted) {
      await this.keyReady;
      await this.room.setE2EEEnabled(true);
    }
    await this.room.connect(url, token, { autoSubscribe: false });
    for (const p of this.room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) this.decide(pub, p);
    }
    await this.publishIfAllowed();
    this.events.changed();
  }

  get inLobby(): boolean {
    const perm = this.room.localParticipant.permissions;
    return this.room.localParticipant.attributes[LOBBY_ATTRIBUTE] === 'waiting' || perm?.canSubscribe === false;
  }

  /** Whether remote media must be encrypted to be played (a Required meeting). */
  private mustEncrypt(): boolean {
    return this.policy.e2ee === 'Required';
  }

  /** Publishes camera and microphone once the token or a moderator allows it. */
  private async publishIfAllowed(): Promise<void> {
    const local = this.room.localParticipant;
    if (this.publishing || !local.permissions?.canPublish) return;
    if (this.encrypted) await this.localEncryptionActive(ENCRYPTION_WAIT_MS);
    this.publishing = true;
    await local.setMicrophoneEnabled(true);
    await local.setCameraEnabled(true);
    this.checkLocalEncryption();
  }

  /**
   * Resolves once this page encrypts what it sends; rejects (and nothing is published) if that
   * does not happen within `ms`. The E2EE worker confirms asynchronously, so right after
   * `connect` the local status can still be off for a moment: checking once made a correct
   * page refuse to publish now and then.
   */
  private localEncryptionActive(ms: number): Promise<void> {
    const room = this.room;
    const on = () => room.isE2EEEnabled && room.localParticipant.isE2EEEnabled;
    if (on()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!on()) return;
        clearTimeout(timer);
        room.off(RoomEvent.ParticipantEncryptionStatusChanged, check);
        resolve();
      };
      const timer = setTimeout(() => {
        room.off(RoomEvent.ParticipantEncryptionStatusChanged, check);
        reject(new Error('encryption is not active; refusing to publish'));
      }, ms);
      room.on(RoomEvent.ParticipantEncryptionStatusChanged, check);
    });
  }

  /** A local track the server recorded as unencrypted is taken down at once. */
  private checkLocalEncryption(): void {
    if (!this.encrypted) return;
    for (const pub of this.room.localParticipant.trackPublications.values()) {
      if (!pub.isEncrypted && pub.track) {
        void this.room.localParticipant.unpublishTrack(pub.track);
        throw new Error(`the ${pub.source} track was published without encryption and has been taken down`);
      }
    }
  }

  /** Whether this page may play `pub`: an encrypted track only with the key, a track in the
   * clear only in a Preferred meeting. */
  private playable(pub: RemoteTrackPublication): boolean {
    return pub.isEncrypted ? this.encrypted : !this.mustEncrypt();
  }

  /** Subscribes to what may be played, and unsubscribes from what may not. */
  private decide(pub: RemoteTrackPublication, participant: RemoteParticipant): void {
    this.remote(participant.identity);
    const allowed = this.playable(pub);
    const canSubscribe = this.room.localParticipant.permissions?.canSubscribe !== false;
    if (!allowed && pub.isDesired) {
      pub.setSubscribed(false);
    } else if (allowed && canSubscribe) {
      pub.setSubscribed(true);
    }
  }

  private remote(identity: string): RemoteInfo {
    let i = this.info.get(identity);
    if (!i) {
      i = { decryptErrors: 0, lastErrorAt: 0, lastFrameAt: 0, framesPresented: 0, encryptionStatus: undefined };
      this.info.set(identity, i);
    }
    return i;
  }

  private listen(): void {
    const room = this.room;
    const changed = () => this.events.changed();
    room
      .on(RoomEvent.TrackPublished, (pub, p) => {
        this.decide(pub, p);
        changed();
      })
      .on(RoomEvent.TrackSubscribed, (track, pub, p) => {
        this.attach(track, pub, p);
        changed();
      })
      .on(RoomEvent.TrackUnsubscribed, (track) => {
        this.detach(track);
        changed();
      })
      .on(RoomEvent.TrackUnpublished, changed)
      .on(RoomEvent.ParticipantConnected, changed)
      .on(RoomEvent.ParticipantDisconnected, (p) => {
        this.info.delete(p.identity);
        changed();
      })
      .on(RoomEvent.ParticipantAttributesChanged, changed)
      .on(RoomEvent.ParticipantNameChanged, changed)
      .on(RoomEvent.LocalTrackPublished, () => {
        this.checkLocalEncryption();
        changed();
      })
      .on(RoomEvent.ParticipantPermissionsChanged, (_prev, p) => {
        if (p === room.localParticipant) this.onLocalPermissions();
        changed();
      })
      .on(RoomEvent.ParticipantEncryptionStatusChanged, (enabled, p) => {
        if (p && p !== room.localParticipant) this.remote(p.identity).encryptionStatus = enabled;
        changed();
      })
      .on(RoomEvent.EncryptionError, (_error, p) => {
        if (p && p !== room.localParticipant) {
          const i = this.remote(p.identity);
          i.decryptErrors += 1;
          i.lastErrorAt = performance.now();
        }
        changed();
      })
      .on(RoomEvent.Disconnected, (reason) => {
        for (const el of this.played.values()) el.remove();
        this.played.clear();
        this.events.ended(reason === undefined ? 'UNKNOWN_REASON' : DisconnectReason[reason]);
      });
  }

  /** Admitted from the lobby (or permissions changed otherwise): subscribe and publish now. */
  private onLocalPermissions(): void {
    for (const p of this.room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) this.decide(pub, p);
    }
    this.publishIfAllowed().catch((e: unknown) => this.events.ended(`publish failed: ${String(e)}`));
  }

  private attach(track: RemoteTrack, pub: RemoteTrackPublication, p: RemoteParticipant): void {
    if (!this.playable(pub)) {
      // Subscribed before the page could refuse (e.g. by a server-side subscription): never play.
      pub.setSubscribed(false);
      return;
    }
    const el = track.attach();
    el.dataset.identity = p.identity;
    el.dataset.source = pub.source;
    if (track.kind === Track.Kind.Video) {
      const v = el as HTMLVideoElement;
      v.muted = true;
      v.playsInline = true;
      this.countFrames(v, p.identity);
    }
    this.played.set(track.sid ?? pub.trackSid, el);
  }

  private detach(track: RemoteTrack): void {
    for (const el of track.detach()) el.remove();
    this.played.delete(track.sid ?? '');
  }

  private countFrames(v: HTMLVideoElement, identity: string): void {
    const onFrame = () => {
      const i = this.remote(identity);
      i.framesPresented += 1;
      i.lastFrameAt = performance.now();
      if (v.srcObject) v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
  }

  /** The media element of a remote track, to be placed in its tile. */
  element(trackSid: string): HTMLMediaElement | undefined {
    return this.played.get(trackSid);
  }

  local(): LocalView {
    const l = this.room.localParticipant;
    return {
      identity: l.identity,
      e2ee: this.room.isE2EEEnabled,
      canPublish: l.permissions?.canPublish ?? false,
      canSubscribe: l.permissions?.canSubscribe ?? false,
      tracks: [...l.trackPublications.values()].map((pub) => ({
        sid: pub.trackSid,
        kind: pub.kind,
        source: pub.source,
        encrypted: pub.isEncrypted,
        subscribed: false,
        played: false,
      })),
    };
  }

  participants(): ParticipantView[] {
    return [...this.room.remoteParticipants.values()].map((p) => this.view(p));
  }

  private view(p: RemoteParticipant): ParticipantView {
    const i = this.remote(p.identity);
    const tracks: TrackView[] = [...p.trackPublications.values()].map((pub) => ({
      sid: pub.trackSid,
      kind: pub.kind,
      source: pub.source,
      encrypted: pub.isEncrypted,
      subscribed: pub.isSubscribed,
      played: this.played.has(pub.trackSid),
    }));
    const lobby = p.attributes[LOBBY_ATTRIBUTE] === 'waiting';
    const name = displayName(p);
    let tile: TileState = tracks.some((t) => t.played) ? 'media' : 'no-media';
    let message = '';
    if (lobby) {
      tile = 'waiting';
      message = `${name} is waiting to be let in`;
    } else if (this.mustEncrypt() && tracks.some((t) => !t.encrypted)) {
      tile = 'unencrypted';
      message = `${name} is sending without end-to-end encryption; their media is not played`;
    } else if (!this.encrypted && tracks.some((t) => t.encrypted)) {
      tile = 'needs-key';
      message = `${name}'s media is end-to-end encrypted; join with the meeting passphrase to see and hear it`;
    } else if (tracks.some((t) => t.played && !t.encrypted)) {
      message = `${name} is not end-to-end encrypted`;
    } else if (i.decryptErrors > 0 && i.lastErrorAt > i.lastFrameAt) {
      tile = 'cannot-decrypt';
      message = `Cannot decrypt ${name}'s media: they use a different meeting key`;
    }
    return {
      identity: p.identity,
      name,
      encryptionStatus: i.encryptionStatus,
      tracks,
      decryptErrors: i.decryptErrors,
      framesPresented: i.framesPresented,
      lobby,
      tile,
      message,
    };
  }

  /** Whether this page plays any remote track that was sent in the clear (a Preferred meeting). */
  playsUnencrypted(): boolean {
    return this.participants().some((p) => p.tracks.some((t) => t.played && !t.encrypted));
  }

  async stats(): Promise<InboundStats[]> {
    const out: InboundStats[] = [];
    for (const p of this.room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) {
        const report = pub.track ? await pub.track.getRTCStatsReport() : undefined;
        if (!report) continue;
        const all = new Map<string, Record<string, unknown>>();
        report.forEach((s: Record<string, unknown>) => all.set(String(s.id), s));
        for (const s of all.values()) {
          if (s.type !== 'inbound-rtp') continue;
          out.push({
            identity: p.identity,
            kind: String(s.kind),
            framesDecoded: Number(s.framesDecoded ?? 0),
            totalSamplesReceived: Number(s.totalSamplesReceived ?? 0),
            totalAudioEnergy: Number(s.totalAudioEnergy ?? 0),
            bytesReceived: Number(s.bytesReceived ?? 0),
            candidateType: localCandidateType(all, s),
          });
        }
      }
    }
    return out;
  }

  async toggle(source: 'camera' | 'microphone' | 'screen'): Promise<boolean> {
    const l = this.room.localParticipant;
    if (this.encrypted && !this.room.isE2EEEnabled) throw new Error('encryption is not active');
    let on: boolean;
    if (source === 'camera') {
      on = !l.isCameraEnabled;
      await l.setCameraEnabled(on);
    } else if (source === 'microphone') {
      on = !l.isMicrophoneEnabled;
      await l.setMicrophoneEnabled(on);
    } else {
      on = !l.isScreenShareEnabled;
      await l.setScreenShareEnabled(on);
    }
    this.checkLocalEncryption();
    return on;
  }

  async leave(): Promise<void> {
    await this.room.disconnect();
  }
}

/** `host`, `srflx`, `prflx` or `relay`: how this track's transport reaches the SFU. */
function localCandidateType(all: Map<string, Record<string, unknown>>, inbound: Record<string, unknown>): string {
  const transport = all.get(String(inbound.transportId));
  const pair = transport ? all.get(String(transport.selectedCandidatePairId)) : undefined;
  const local = pair ? all.get(String(pair.localCandidateId)) : undefined;
  return local ? String(local.candidateType) : '';
}

export function displayName(p: Participant): string {
  return p.name || p.identity;
}
