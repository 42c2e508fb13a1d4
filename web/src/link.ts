// What a join link carries, and what its token says. The token is decoded here only to show the
// room and to learn the Meeting's E2EE policy; LiveKit (or `conclave web`, for a guest token)
// verifies it.

export type E2eePolicy = 'Required' | 'Preferred';
export type KeyDistribution = 'Link' | 'OutOfBand';

export interface Link {
  /** An access token (`?token=`). */
  token?: string;
  /** A guest token (`?guest=`), to be exchanged by `conclave web`. */
  guest?: string;
  /** The E2EE passphrase from the fragment (`#key=`). */
  key?: string;
}

export interface Claims {
  sub: string;
  name?: string;
  exp?: number;
  nbf?: number;
  video?: { room?: string; roomJoin?: boolean; roomAdmin?: boolean };
  metadata?: string;
}

export interface Policy {
  e2ee: E2eePolicy;
  keyDistribution: KeyDistribution;
  guest: boolean;
  lobby: boolean;
}

/** Reads the link from the address, then removes token and key from the address bar and from
 * the history entry, so neither is left for a screenshot, a shared screen or the back button. */
export function takeLink(): Link {
  const query = new URLSearchParams(window.location.search);
  const fragment = new URLSearchParams(window.location.hash.replace(/^#/, ''));
  const link: Link = {
    token: query.get('token') ?? undefined,
    guest: query.get('guest') ?? undefined,
    key: fragment.get('key') ?? undefined,
  };
  window.history.replaceState(null, '', window.location.pathname);
  return link;
}

/** The payload of a JWT, unverified. */
export function decodeClaims(jwt: string): Claims {
  const part = jwt.split('.')[1];
  if (!part) throw new Error('the link does not hold a token');
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const bytes = Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0));
  const claims = JSON.parse(new TextDecoder().decode(bytes)) as Claims;
  if (typeof claims.sub !== 'string') throw new Error('the token has no subject');
  return claims;
}

/** The Meeting's E2EE settings from the token's metadata; anything unreadable is `Required`
 * with the key in the link, the strictest reading. */
export function policyOf(claims: Claims): Policy {
  let meta: Record<string, unknown> = {};
  try {
    meta = JSON.parse(claims.metadata ?? '{}') as Record<string, unknown>;
  } catch {
    meta = {};
  }
  return {
    e2ee: meta.e2ee === 'Preferred' ? 'Preferred' : 'Required',
    keyDistribution: meta.keyDistribution === 'OutOfBand' ? 'OutOfBand' : 'Link',
    guest: meta.guest === true,
    lobby: meta.lobby === true,
  };
}

/** The room name from the address path, for display before a token is read. */
export function roomFromPath(): string {
  const seg = window.location.pathname.replace(/^\//, '');
  try {
    return decodeURIComponent(seg);
  } catch {
    return seg;
  }
}
