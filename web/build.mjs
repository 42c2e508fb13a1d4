// Builds the page into dist/: index.html and app.css as they are, app.js (the page, with
// livekit-client) and e2ee-worker.js (LiveKit's E2EE worker, which the page starts from its own
// origin so the CSP can stay 'self'). No source maps: the page ships nothing it does not run.
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';

const out = 'dist';
await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const common = { bundle: true, minify: true, target: ['chrome111', 'firefox115', 'safari16'], legalComments: 'none', logLevel: 'warning' };
await build({ ...common, entryPoints: ['src/main.ts'], outfile: `${out}/app.js`, format: 'esm' });
await build({ ...common, entryPoints: ['livekit-client/e2ee-worker'], outfile: `${out}/e2ee-worker.js`, format: 'iife' });
for (const f of ['index.html', 'app.css', 'favicon.svg']) {
  await copyFile(`src/${f}`, `${out}/${f}`);
}
