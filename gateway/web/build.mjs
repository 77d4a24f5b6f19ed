// Bundle the web IDE into dist/ (served by the gateway: dist/index.html at
// /, dist/assets/* at /assets/*). Three entry points share chunks:
//   app        the first page: router, login, dashboard (kept small)
//   workspace  file tree, tabs, terminals (xterm.js), loaded on /w/{id}
//   editor     Monaco, loaded by the workspace in parallel with its own code
// plus Monaco's editor worker (a classic script). Every asset's name carries
// its content hash, so the gateway serves them as immutable; index.html
// (no-cache) names them in a JSON manifest. Each asset over 1 KiB that
// gzip shrinks is written gzipped beside itself (<name>.gz) for the gateway.
//
//   node build.mjs            minified production build
//   node build.mjs --dev      unminified, with source maps
import * as esbuild from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync, constants } from 'node:zlib';

const dev = process.argv.includes('--dev');
const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.join(here, 'dist');
const assets = path.join(out, 'assets');

// monaco-vim imports Monaco by its file paths (monaco-editor/esm/vs/...),
// which monaco-editor's "exports" map does not list: resolve them to the
// same files the IDE's own imports reach, so there is one Monaco.
const monacoFiles = {
    name: 'monaco-files',
    setup(b) {
        b.onResolve({ filter: /^monaco-editor\/esm\// }, (args) => ({
            path: path.join(here, 'node_modules', args.path.endsWith('.js') ? args.path : args.path + '.js'),
        }));
    },
};

const common = {
    plugins: [monacoFiles],
    absWorkingDir: here,
    bundle: true,
    minify: !dev,
    sourcemap: dev ? 'linked' : false,
    target: ['es2022', 'chrome110', 'firefox110', 'safari16'],
    outdir: assets,
    entryNames: '[name]-[hash]',
    chunkNames: 'chunk-[hash]',
    assetNames: '[name]-[hash]',
    legalComments: 'linked',
    logLevel: 'warning',
    metafile: true,
    loader: { '.ttf': 'file', '.woff2': 'file', '.svg': 'file', '.png': 'file' },
};

fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(assets, { recursive: true });

const app = await esbuild.build({
    ...common,
    entryPoints: {
        app: 'src/main.ts',
        workspace: 'src/workspace/index.ts',
        editor: 'src/editor/index.ts',
    },
    format: 'esm',
    splitting: true,
});
const worker = await esbuild.build({
    ...common,
    entryPoints: { 'editor.worker': 'monaco-editor/editor/editor.worker.js' },
    format: 'iife',
});

// entry name -> { js, css } URLs, from the metafiles. Only the named
// entries: Monaco's lazily loaded language chunks are entry points too, and
// their CSS is a subset of the editor entry's.
const entries = {
    'src/main.ts': 'app', 'src/workspace/index.ts': 'workspace', 'src/editor/index.ts': 'editor',
    'node_modules/monaco-editor/esm/vs/editor/editor.worker.js': 'editor.worker',
};
const manifest = {};
for (const meta of [app.metafile, worker.metafile]) {
    for (const [file, o] of Object.entries(meta.outputs)) {
        const name = entries[o.entryPoint];
        if (!name || !file.endsWith('.js')) continue;
        manifest[name] = { js: '/assets/' + path.basename(file) };
        if (o.cssBundle) manifest[name].css = '/assets/' + path.basename(o.cssBundle);
    }
}
for (const need of ['app', 'workspace', 'editor', 'editor.worker'])
    if (!manifest[need]) throw new Error(`build: no output for entry ${need}`);

const template = fs.readFileSync(path.join(here, 'src/index.html'), 'utf8');
const html = template
    .replace('%APP_CSS%', manifest.app.css)
    .replace('%APP_JS%', manifest.app.js)
    .replace('%MANIFEST%', JSON.stringify(manifest).replace(/</g, '\\u003c'));
fs.writeFileSync(path.join(out, 'index.html'), html);

let total = 0;
let zipped = 0;
for (const f of fs.readdirSync(assets)) {
    const p = path.join(assets, f);
    const data = fs.readFileSync(p);
    total += data.length;
    if (data.length < 1024 || /\.(png|woff2)$/.test(f)) continue;
    const gz = gzipSync(data, { level: constants.Z_BEST_COMPRESSION });
    if (gz.length < data.length * 0.9) {
        fs.writeFileSync(p + '.gz', gz);
        zipped++;
    }
}
console.log(`build: dist/ ${(total / 1024).toFixed(0)} KiB in ${fs.readdirSync(assets).length} files ` +
    `(${zipped} gzipped); first page ${manifest.app.js}`);
