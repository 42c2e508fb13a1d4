// The join page: from a link to an end-to-end encrypted call.
//
// 1. Take the token (or guest token) from the query and the key from the fragment, and remove
//    both from the address bar and history.
// 2. A guest types a name; `conclave web` exchanges the guest token for an access token.
// 3. Without a key in the link, ask for the passphrase. A Required meeting is never joined
//    without one.
// 4. Switch E2EE on, then connect; publish only encrypted, play only encrypted.

import { Call } from './call';
import { errors, install, type PageState, recordErrors, type Snapshot } from './hook';
import { type Claims, decodeClaims, type Policy, policyOf, roomFromPath, takeLink } from './link';
import { admit, apiUrlOf, deny } from './moderation';
import { Ui } from './ui';

recordErrors();

const ui = new Ui();
let state: PageState = 'loading';
let reason = '';
let call: Call | undefined;
let claims: Claims | undefined;
let policy: Policy | undefined;
let livekitUrl = '';
let accessToken = '';

function set(next: PageState, text: string, problem = false): void {
  state = next;
  ui.notice(text, problem);
  update();
}

function moderator(): boolean {
  return claims?.video?.roomAdmin === true;
}

function update(): void {
  const views = call?.participants() ?? [];
  if (call && state === 'lobby' && !call.inLobby) {
    state = 'joined';
    ui.notice('');
  }
  const connected = state === 'joined' || state === 'lobby';
  if (!call || !connected) ui.encryption('unknown');
  else if (!call.encrypted) ui.encryption('off');
  else if (!call.room.isE2EEEnabled) ui.encryption('unknown');
  else ui.encryption(call.playsUnencrypted() ? 'mixed' : 'on');
  // A guest in the lobby sees the notice only: no tiles, no controls, nothing to receive yet.
  const joined = state === 'joined';
  ui.render(joined ? call : undefined, views);
  ui.controls(joined ? call : undefined, leave, problem);
  ui.waiting(
    joined && moderator() ? views.filter((v) => v.lobby) : [],
    (identity, yes) => {
      const room = claims?.video?.room ?? '';
      (yes ? admit : deny)(apiUrlOf(livekitUrl), accessToken, room, identity).then(update, problem);
    },
  );
}

function problem(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  errors.push(`page: ${msg}`);
  ui.notice(msg, true);
}

function leave(): void {
  call?.leave().catch(problem);
}

function ended(why: string): void {
  reason = why;
  const waiting = state === 'lobby';
  switch (why) {
    case 'ROOM_DELETED':
      set('ended', 'This meeting has ended.');
      break;
    case 'PARTICIPANT_REMOVED':
      if (waiting) set('denied', 'A moderator did not let you in.', true);
      else set('removed', 'A moderator removed you from the meeting.', true);
      break;
    case 'CLIENT_INITIATED':
      set('left', 'You left the meeting.');
      break;
    case 'DUPLICATE_IDENTITY':
      set('removed', 'You joined from another tab or device; this one was disconnected.', true);
      break;
    default:
      set('ended', `Disconnected (${why}).`, true);
  }
}

async function exchange(guest: string, name: string): Promise<string> {
  const res = await fetch('/_conclave/guest', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ guest, name }),
    cache: 'no-store',
  });
  const body = (await res.json()) as { token?: string; error?: string };
  if (!res.ok || !body.token) throw new Error(body.error ?? `the guest link was refused (${res.status})`);
  return body.token;
}

async function main(): Promise<void> {
  const link = takeLink();
  ui.setRoom(roomFromPath());
  const config = (await (await fetch('/_conclave/config', { cache: 'no-store' })).json()) as { livekitUrl: string };
  livekitUrl = config.livekitUrl;
  const first = link.token ?? link.guest;
  if (!first) {
    set('needs-link', 'Open this page from your meeting link.', true);
    return;
  }
  claims = decodeClaims(first);
  policy = policyOf(claims);
  ui.setRoom(claims.video?.room ?? roomFromPath());
  accessToken = link.token ?? '';
  if (link.guest && !link.token) {
    set('needs-name', 'You are joining as a guest.');
    accessToken = await exchange(link.guest, await ui.askName());
    claims = decodeClaims(accessToken);
    policy = policyOf(claims);
  }
  let key = link.key;
  if (key === undefined) {
    set(
      'needs-key',
      policy.keyDistribution === 'OutOfBand'
        ? 'Enter the meeting passphrase the organiser gave you.'
        : 'This link has lost its key (the part after #). Enter the passphrase, or ask for the link again.',
      policy.keyDistribution !== 'OutOfBand',
    );
    key = await ui.askKey(policy.e2ee === 'Preferred');
  }
  set('connecting', 'Connecting…');
  call = new Call(policy, key, { changed: update, ended });
  try {
    await call.connect(livekitUrl, accessToken);
  } catch (e) {
    reason = e instanceof Error ? e.message : String(e);
    set('failed', `Could not join: the meeting is not open, or this link is no longer valid. (${reason})`, true);
    return;
  }
  if (call.inLobby) set('lobby', 'Waiting for a moderator to let you in…');
  else set('joined', '');
}

install({
  snapshot(): Snapshot {
    return {
      state,
      reason,
      room: claims?.video?.room ?? '',
      moderator: moderator(),
      policy: policy ? `${policy.e2ee}/${policy.keyDistribution}` : '',
      e2ee: call?.room.isE2EEEnabled ?? false,
      local: call && call.room.localParticipant.identity ? call.local() : undefined,
      participants: call?.participants() ?? [],
      waiting: (call?.participants() ?? []).filter((p) => p.lobby).map((p) => p.identity),
      errors: [...errors],
    };
  },
  stats: () => call?.stats() ?? Promise.resolve([]),
});

main().catch((e: unknown) => {
  problem(e);
  state = 'failed';
  reason = e instanceof Error ? e.message : String(e);
  update();
});
