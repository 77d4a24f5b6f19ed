// The web IDE's figures, in headless Chromium (see run):
//   node bench.mjs <gateway url> <screenshot dir> <runs>
import { api, apiUser, createSession, launch, log, screenshot, waitReady, waitTerminal } from '../../browser/lib.mjs';

const [url, out, runsArg] = process.argv.slice(2);
const RUNS = Number(runsArg) || 5;

function pct(v, p) {
    const s = [...v].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
function fmt(v) { return `p50 ${pct(v, 50).toFixed(0)} ms, max ${Math.max(...v).toFixed(0)} ms (n=${v.length})`; }
const kb = (n) => `${(n / 1024).toFixed(1)} KB`;

/** Bytes the page transferred (encoded: gzipped where the gateway gzips),
 *  by the Resource Timing of every request, the document included. */
async function transferred(page, filter = () => true) {
    const entries = await page.evaluate(() => [
        ...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource'),
    ].map((e) => ({ name: e.name, enc: e.encodedBodySize, dec: e.decodedBodySize, type: e.initiatorType })));
    const mine = entries.filter(filter);
    return { wire: mine.reduce((a, e) => a + e.enc, 0), raw: mine.reduce((a, e) => a + e.dec, 0), n: mine.length, entries: mine };
}

/** Open a workspace URL; ms until the editor takes input and the terminal shows a prompt. */
async function openWorkspace(page, uuid) {
    const t0 = Date.now();
    await page.goto(`${url}/w/${uuid}`);
    let editorMs = 0;
    let termMs = 0;
    await Promise.all([
        page.locator('[data-testid=editor] .monaco-editor textarea').waitFor({ state: 'attached', timeout: 30000 })
            .then(() => page.locator('[data-testid=editor-tab].active').waitFor())
            .then(() => { editorMs = Date.now() - t0; }),
        waitTerminal(page, /\$\s*$/m, 30000).then(() => { termMs = Date.now() - t0; }),
    ]);
    const marks = await page.evaluate(() => Object.fromEntries(performance.getEntriesByType('mark')
        .filter((m) => m.name.startsWith('atelier:')).map((m) => [m.name.slice(8), Math.round(m.startTime)])));
    return { editorMs, termMs, usableMs: Math.max(editorMs, termMs), marks };
}

/** p50 of each of the page's own marks (ms from navigation start) over runs. */
function markTable(runs) {
    const names = [...new Set(runs.flatMap((r) => Object.keys(r)))];
    return names.map((n) => [n, pct(runs.map((r) => r[n]).filter((v) => v !== undefined), 50)])
        .sort((a, b) => a[1] - b[1]).map(([n, v]) => `${n} ${v}`).join(', ');
}

const browser = await launch();
try {
    // ---- first page: the login page, cold ----
    {
        const ctx = await browser.newContext();
        const page = await ctx.newPage();
        await page.goto(`${url}/login`);
        await page.getByTestId('email').waitFor();
        await page.waitForLoadState('networkidle');
        const t = await transferred(page);
        console.log(`first page (/login, cold): ${kb(t.wire)} transferred (${kb(t.raw)} uncompressed) in ${t.n} requests; goal <= 150 KB gzipped`);
        await ctx.close();
    }

    // ---- the workspace: cold and warm ----
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    const { token } = await apiUser(page, url);
    const s = await api(url, token, 'POST', '/api/sessions', { name: 'bench' });
    const uuid = s.json.uuid;
    await page.goto(`${url}/`);
    await page.getByTestId('new-session').waitFor();
    await page.goto(`${url}/w/${uuid}`);
    await waitReady(page, 60000);
    await page.getByTestId('editor-tab').first().waitFor({ timeout: 30000 });
    await page.waitForLoadState('networkidle');
    const ws = await transferred(page);
    const monaco = ws.entries.filter((e) => /\/assets\/(editor|chunk)-/.test(e.name));
    console.log(`workspace page: ${kb(ws.wire)} transferred (${kb(ws.raw)} uncompressed) in ${ws.n} requests, ` +
        `Monaco and its chunks ${kb(monaco.reduce((a, e) => a + e.enc, 0))} of it, loaded only here`);
    const heap = await page.evaluate(() => performance.memory ? performance.memory.usedJSHeapSize : 0);
    if (heap) console.log(`workspace page JS heap: ${(heap / 1048576).toFixed(1)} MB`);
    await screenshot(page, out, 'workspace');

    const coldMarks = [];
    const warmMarks = [];
    const cold = [];
    const coldEd = [];
    const coldTerm = [];
    for (let i = 0; i < RUNS; i++) {
        const c = await browser.newContext({ viewport: { width: 1280, height: 800 } });
        const p = await c.newPage();
        await p.addInitScript((t) => sessionStorage.setItem('atelier.token', t), token);
        const r = await openWorkspace(p, uuid);
        cold.push(r.usableMs); coldEd.push(r.editorMs); coldTerm.push(r.termMs); coldMarks.push(r.marks);
        await c.close();
    }
    const warm = [];
    const warmEd = [];
    const warmTerm = [];
    for (let i = 0; i < RUNS; i++) {
        const r = await openWorkspace(page, uuid);
        warm.push(r.usableMs); warmEd.push(r.editorMs); warmTerm.push(r.termMs); warmMarks.push(r.marks);
    }
    console.log(`open workspace URL -> editor + terminal prompt, cold cache: ${fmt(cold)} (editor ${fmt(coldEd)}; terminal ${fmt(coldTerm)})`);
    console.log(`open workspace URL -> editor + terminal prompt, warm cache: ${fmt(warm)} (editor ${fmt(warmEd)}; terminal ${fmt(warmTerm)}); goal <= 1000 ms`);
    console.log(`  where the time goes, cold (p50 ms after navigation start): ${markTable(coldMarks)}`);
    console.log(`  where the time goes, warm: ${markTable(warmMarks)}`);

    // ---- create -> usable terminal ----
    const create = [];
    for (let i = 0; i < RUNS; i++) {
        await page.goto(`${url}/`);
        await page.getByTestId('new-session').click();
        await page.getByTestId('session-name').fill(`bench-${i}`);
        const t0 = Date.now();
        await page.getByTestId('create-session').click();
        await page.waitForURL(/\/w\/[0-9a-f-]{36}$/);
        await waitTerminal(page, /\$\s*$/m, 60000);
        create.push(Date.now() - t0);
    }
    console.log(`"Create" click -> terminal prompt: ${fmt(create)}; goal <= 1000 ms`);
    await screenshot(page, out, 'created');
    void createSession;
} finally {
    await browser.close();
}
log('done');
