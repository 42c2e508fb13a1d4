// `window.conclave`: a read-only view of what the page knows, for the browser tests and for
// anyone debugging a call from the console. It holds no token and no key.

export type PageState =
  | 'loading'
  | 'needs-link'
  | 'needs-name'
  | 'needs-key'
  | 'connecting'
  | 'lobby'
  | 'joined'
  | 'denied'
  | 'ended'
  | 'removed'
  | 'left'
  | 'failed';

/** What a remote participant's tile shows. */
export type TileState = 'media' | 'no-media' | 'cannot-decrypt' | 'unencrypted' | 'needs-key' | 'waiting';

export interface TrackView {
  sid: string;
  kind: string;
  source: string;
  /** The publisher declared the track encrypted (what the SFU also records). */
  encrypted: boolean;
  subscribed: boolean;
  /** Attached to a media element. */
  played: boolean;
}

export interface ParticipantView {
  identity: string;
  name: string;
  /** From the SDK's participant encryption status events. */
  encryptionStatus: boolean | undefined;
  tracks: TrackView[];
  decryptErrors: number;
  /** Video frames presented by this participant's video element (requestVideoFrameCallback). */
  framesPresented: number;
  lobby: boolean;
  tile: TileState;
  message: string;
}

export interface LocalView {
  identity: string;
  e2ee: boolean;
  canPublish: boolean;
  canSubscribe: boolean;
  tracks: TrackView[];
}

export interface InboundStats {
  identity: string;
  kind: string;
  framesDecoded: number;
  totalSamplesReceived: number;
  totalAudioEnergy: number;
  bytesReceived: number;
  candidateType: string;
}

export interface Snapshot {
  state: PageState;
  reason: string;
  room: string;
  moderator: boolean;
  policy: string;
  e2ee: boolean;
  local?: LocalView;
  participants: ParticipantView[];
  waiting: string[];
  errors: string[];
}

export interface Hook {
  snapshot(): Snapshot;
  /** Inbound RTP stats of every subscribed remote track. */
  stats(): Promise<InboundStats[]>;
}

export const errors: string[] = [];

/** Records uncaught errors; the tests fail on any. */
export function recordErrors(): void {
  window.addEventListener('error', (e) => errors.push(`error: ${e.message}`));
  window.addEventListener('unhandledrejection', (e) => errors.push(`unhandled rejection: ${String(e.reason)}`));
  document.addEventListener('securitypolicyviolation', (e) =>
    errors.push(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`),
  );
}

export function install(hook: Hook): void {
  (window as unknown as { conclave: Hook }).conclave = hook;
}
