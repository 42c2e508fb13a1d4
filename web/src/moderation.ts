// A moderator's Admit and Deny: LiveKit's RoomService, called over HTTP (Twirp) with the
// moderator's own access token, whose `roomAdmin` grant for this room is what authorises
// UpdateParticipant and RemoveParticipant there. `conclave web` is not involved.

import { LOBBY_ATTRIBUTE } from './call';

async function twirp(apiUrl: string, token: string, method: string, body: object): Promise<void> {
  const res = await fetch(`${apiUrl}/twirp/livekit.RoomService/${method}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${token}` },
    body: JSON.stringify(body),
    credentials: 'omit',
    referrerPolicy: 'no-referrer',
  });
  if (!res.ok) {
    let msg = `${res.status}`;
    try {
      const err = (await res.json()) as { msg?: string };
      if (err.msg) msg = `${res.status}: ${err.msg}`;
    } catch {
      // not JSON; the status says enough
    }
    throw new Error(`${method} failed (${msg})`);
  }
}

/** Lets a waiting guest in: full media permissions, lobby mark removed. */
export function admit(apiUrl: string, token: string, room: string, identity: string): Promise<void> {
  return twirp(apiUrl, token, 'UpdateParticipant', {
    room,
    identity,
    permission: { can_subscribe: true, can_publish: true, can_publish_data: true },
    // An empty value deletes the attribute.
    attributes: { [LOBBY_ATTRIBUTE]: '' },
  });
}

/** Sends a waiting guest away (they may come back with the guest link and wait again). */
export function deny(apiUrl: string, token: string, room: string, identity: string): Promise<void> {
  return twirp(apiUrl, token, 'RemoveParticipant', { room, identity });
}

/** LiveKit's HTTP API from its signalling URL (`wss://x` → `https://x`). */
export function apiUrlOf(signalling: string): string {
  return signalling.replace(/^ws(s?):\/\//, 'http$1://').replace(/\/$/, '');
}
