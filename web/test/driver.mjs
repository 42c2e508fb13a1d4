// Drives headless Chromium (over CDP) and Firefox ESR (over WebDriver BiDi) for the Rust browser
// test (tests/join_page.rs). One command per line on stdin, one JSON answer per line on stdout:
// {"ok": ...} or {"error": "..."}. The test owns the scenario and every assertion; this only
// opens pages, clicks, types, evaluates and takes screenshots, and collects each page's
// JavaScript errors.
//
//   {"cmd":"launch","chromium":"/usr/lib/chromium/chromium","userDataDir":"/tmp/x","args":[...]}
//   {"cmd":"launch","firefox":"/usr/lib/firefox-esr/firefox-esr","userDataDir":"/tmp/y"}
//   {"cmd":"open","id":"alice","url":"http://...","relayOnly":false,"browser":"chromium"}
//   {"cmd":"eval","id":"alice","expr":"window.conclave.snapshot()"}
//   {"cmd":"click","id":"alice","selector":"#leave"}
//   {"cmd":"type","id":"guest","selector":"#name-input","text":"Gina"}
//   {"cmd":"screenshot","id":"alice","path":"/out/alice.png"}
//   {"cmd":"problems","id":"alice"}      -> uncaught errors, CSP violations, console errors
//   {"cmd":"close","id":"alice"}
//   {"cmd":"quit"}

import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import puppeteer from 'puppeteer-core';

// By name: "chromium", "firefox".
const browsers = new Map();
const pages = new Map();

// Chromium's switches for a closed network: no background traffic, no GPU, fake camera and
// microphone that need no permission prompt, media that plays without a gesture.
const BASE_ARGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
  '--disable-domain-reliability',
  '--metrics-recording-only',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // Host candidates as addresses, not mDNS names: the namespace has no mDNS responder.
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

// Firefox's equivalents: fake camera and microphone without a prompt, autoplay, host candidates
// as addresses. Puppeteer's own Firefox preferences already switch off updates, telemetry and
// other background traffic.
//
// Camera and microphone are allowed for every site, as for a user who allowed the page: until a
// page captures or holds that permission, Firefox gathers ICE candidates only on the interface
// of the default route (its protection against leaking local addresses), and the test's
// namespace has no default route, so the page (which connects before it captures) gathered none
// and failed with "could not establish pc connection". WebDriver BiDi's
// permissions.setPermission refuses "camera" in Firefox 153 ("currently unsupported"), hence
// the default-permission preferences.
const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'permissions.default.camera': 1,
  'permissions.default.microphone': 1,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
};

// Injected before the page's own scripts when a page must reach the SFU only through TURN:
// every peer connection the page makes gets iceTransportPolicy "relay". The page is unchanged.
const RELAY_ONLY = `(() => {
  const Native = window.RTCPeerConnection;
  const relay = (config) => ({ ...(config || {}), iceTransportPolicy: 'relay' });
  const setConfiguration = Native.prototype.setConfiguration;
  Native.prototype.setConfiguration = function (config) {
    return setConfiguration.call(this, relay(config));
  };
  window.RTCPeerConnection = function (config, ...rest) {
    return new Native(relay(config), ...rest);
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Native);
})();`;

function page(id) {
  const p = pages.get(id);
  if (!p) throw new Error(`no page ${id}`);
  return p;
}

const commands = {
  async launch({ chromium, firefox, userDataDir, args = [] }) {
    const name = firefox ? 'firefox' : 'chromium';
    const b = firefox
      ? await puppeteer.launch({
          browser: 'firefox',
          executablePath: firefox,
          userDataDir,
          headless: true,
          extraPrefsFirefox: FIREFOX_PREFS,
          args,
          protocolTimeout: 60_000,
        })
      : await puppeteer.launch({
          executablePath: chromium,
          userDataDir,
          headless: true,
          ignoreDefaultArgs: ['--enable-automation'],
          args: [...BASE_ARGS, ...args],
          protocolTimeout: 60_000,
        });
    browsers.set(name, b);
    return await b.version();
  },

  async open({ id, url, relayOnly = false, browser = 'chromium' }) {
    const b = browsers.get(browser);
    if (!b) throw new Error(`${browser} is not launched`);
    const context = await b.createBrowserContext();
    const p = await context.newPage();
    const entry = { context, page: p, problems: [], console: [] };
    pages.set(id, entry);
    p.on('pageerror', (e) => entry.problems.push(`pageerror: ${e.message}`));
    p.on('console', (m) => {
      const line = `${m.type()}: ${m.text()}`;
      entry.console.push(line);
      if (m.type() === 'error') entry.problems.push(`console ${line}`);
    });
    p.on('requestfailed', (r) => entry.console.push(`requestfailed: ${r.url().split('?')[0]} ${r.failure()?.errorText}`));
    if (relayOnly) await p.evaluateOnNewDocument(RELAY_ONLY);
    await p.setViewport({ width: 1024, height: 720 });
    const res = await p.goto(url, { waitUntil: 'load', timeout: 30_000 });
    return { status: res?.status() ?? 0, headers: res?.headers() ?? {} };
  },

  // A client that ignores Conclave's rules: LiveKit's own SDK, loaded into a page of the same
  // origin with the CSP bypassed, joining with a valid token but without E2EE, and publishing
  // camera and microphone in the clear. The join page must not play what it sends.
  async rogue({ id, url, livekitUrl, token }) {
    const context = await browsers.get('chromium').createBrowserContext();
    const p = await context.newPage();
    pages.set(id, { context, page: p, problems: [], console: [] });
    await p.setBypassCSP(true);
    await p.goto(url, { waitUntil: 'load', timeout: 30_000 });
    const sdk = await readFile(new URL('../node_modules/livekit-client/dist/livekit-client.umd.js', import.meta.url), 'utf8');
    await p.addScriptTag({ content: sdk });
    return await p.evaluate(
      async (livekitUrl, token) => {
        const room = new window.LivekitClient.Room();
        window.rogueRoom = room;
        await room.connect(livekitUrl, token);
        await room.localParticipant.setMicrophoneEnabled(true);
        await room.localParticipant.setCameraEnabled(true);
        return [...room.localParticipant.trackPublications.values()].map((t) => ({ sid: t.trackSid, encrypted: t.isEncrypted }));
      },
      livekitUrl,
      token,
    );
  },

  async eval({ id, expr }) {
    return await page(id).page.evaluate(`(async () => (${expr}))()`);
  },

  async click({ id, selector }) {
    const p = page(id).page;
    await p.waitForSelector(selector, { visible: true, timeout: 15_000 });
    await p.click(selector);
    return true;
  },

  async type({ id, selector, text }) {
    const p = page(id).page;
    await p.waitForSelector(selector, { visible: true, timeout: 15_000 });
    await p.type(selector, text);
    return true;
  },

  async screenshot({ id, path }) {
    await page(id).page.screenshot({ path, fullPage: true });
    return path;
  },

  async problems({ id }) {
    const e = page(id);
    return { problems: e.problems, console: e.console };
  },

  async close({ id }) {
    const e = page(id);
    pages.delete(id);
    await e.context.close();
    return true;
  },

  async quit() {
    await closeAll();
    setImmediate(() => process.exit(0));
    return true;
  },
};

async function closeAll() {
  await Promise.all([...browsers.values()].map((b) => b.close()));
}

const rl = createInterface({ input: process.stdin });
// One command at a time, in order: the test waits for each answer.
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let out;
    try {
      const msg = JSON.parse(line);
      const fn = commands[msg.cmd];
      if (!fn) throw new Error(`unknown command ${msg.cmd}`);
      out = { ok: (await fn(msg)) ?? null };
    } catch (e) {
      out = { error: String(e?.stack ?? e) };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  });
});
rl.on('close', () => {
  chain.then(closeAll).finally(() => process.exit(0));
});
