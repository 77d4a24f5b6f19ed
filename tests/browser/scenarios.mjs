// Browser scenarios of the web IDE, as a user would go through them, in
// Debian's Chromium. Run by tests/integration/test_browser.py:
//   node scenarios.mjs <scenario> <gateway url> <output dir>
// Exit 0 when the scenario passed; each leaves a screenshot of its last
// state in the output dir (also when it fails).
import {
    api, apiUser, createSession, editorText, harness, launch, log, openFile, register, screenshot,
    terminalText, tokenOf, treeItem, typeInEditor, typeInTerminal, uniqueEmail, waitReady, waitTerminal,
} from './lib.mjs';

const [name, url, out] = process.argv.slice(2);

async function until(what, f, timeout = 15000) {
    const end = Date.now() + timeout;
    let last;
    while (Date.now() < end) {
        last = await f();
        if (last) return last;
        await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}

async function fileContent(token, uuid, p) {
    const r = await api(url, token, 'GET', `/api/workspace/${uuid}/files/${p}`);
    return r.status === 200 ? r.json.content : null;
}

const scenarios = {
    /** register → log in → create → Ready → edit script.py → Ctrl+S → run it
     *  in the terminal → a file made in the terminal shows in the tree →
     *  reload: all still there → delete the session. */
    async newUser(page) {
        const email = uniqueEmail();
        await register(page, url, email);
        log('registered and logged in as', email);
        const uuid = await createSession(page, 'first-session');
        log('created', uuid);
        await waitReady(page);
        log('ready');
        await treeItem(page, 'script.py').waitFor();
        await openFile(page, 'script.py');
        await typeInEditor(page, 'print("hello from the editor", 6 * 7)');
        await page.locator('[data-testid=editor-tab][data-path="script.py"].modified').waitFor();
        await page.keyboard.press('ControlOrMeta+s');
        await page.locator('[data-testid=editor-tab][data-path="script.py"]:not(.modified)').waitFor();
        await page.getByTestId('save-state').filter({ hasText: 'All changes saved' }).waitFor();
        const token = await tokenOf(page);
        const saved = await fileContent(token, uuid, 'script.py');
        if (saved !== 'print("hello from the editor", 6 * 7)') throw new Error(`saved content is ${JSON.stringify(saved)}`);
        log('saved with Ctrl+S');

        await waitTerminal(page, /\$\s*$/m);
        await typeInTerminal(page, 'python script.py\n');
        await waitTerminal(page, /hello from the editor 42/);
        log('ran it in the terminal');
        await typeInTerminal(page, 'echo hi > made_in_terminal.txt\n');
        await treeItem(page, 'made_in_terminal.txt').waitFor({ timeout: 10000 });
        log('the file made in the terminal is in the tree');

        await page.reload();
        await waitReady(page);
        await treeItem(page, 'made_in_terminal.txt').waitFor();
        await waitTerminal(page, /hello from the editor 42/);
        await openFile(page, 'script.py');
        await until('the editor to show the saved text', async () => (await editorText(page)).includes('hello from the editor'));
        log('after a reload: tree, terminal history and file are all there');

        await page.locator('a.brand').click();
        const card = page.locator(`[data-testid=session][data-uuid="${uuid}"]`);
        await card.waitFor();
        await card.getByTestId('delete').click();
        await page.getByTestId('dialog-confirm').click();
        await until('the session to leave the list', async () => (await card.count()) === 0, 30000);
        const r = await api(url, token, 'GET', `/api/sessions/${uuid}`);
        if (r.status === 200 && !['terminating', 'terminated'].includes(r.json.status))
            throw new Error(`after delete the session is ${r.json.status}`);
        log('deleted');
    },

    /** A change is saved a second after the last keystroke, without Ctrl+S. */
    async autosave(page) {
        const { token } = await apiUser(page, url);
        const s = await api(url, token, 'POST', '/api/sessions', { name: 'autosave' });
        await page.goto(`${url}/w/${s.json.uuid}`);
        await waitReady(page);
        await openFile(page, 'script.py');
        await typeInEditor(page, 'x = 1\nprint(x)');
        await page.getByTestId('save-state').filter({ hasText: /Unsaved changes|Saving/ }).waitFor();
        const t0 = Date.now();
        await until('autosave', async () => (await fileContent(token, s.json.uuid, 'script.py')) === 'x = 1\nprint(x)', 10000);
        log(`autosaved ${Date.now() - t0} ms after the last keystroke`);
        await page.getByTestId('save-state').filter({ hasText: 'All changes saved' }).waitFor();

        // typed, then the page reloads at once (before the autosave's second):
        // the text is there after the reload, saved or restored
        await typeInEditor(page, 'print("typed just before a reload")');
        await page.reload();
        await waitReady(page);
        await page.locator('[data-testid=editor-tab][data-path="script.py"].active').waitFor();
        await until('the text typed before the reload', async () => (await editorText(page)).includes('typed just before a reload'));
        await until('it saved', async () => (await fileContent(token, s.json.uuid, 'script.py')) === 'print("typed just before a reload")');
        log('text typed just before a reload was kept and saved');

        // the same when leaving for the dashboard right after typing
        await typeInEditor(page, 'print("typed before leaving")');
        await page.locator('a.brand').click();
        await page.getByTestId('new-session').waitFor();
        await until('saved after leaving', async () => (await fileContent(token, s.json.uuid, 'script.py')) === 'print("typed before leaving")');
        log('text typed just before leaving the page was saved');
    },

    /** Two writers: the editor's save gets 412 and the user is asked. Then an
     *  edit in the terminal under a modified editor shows a banner, and under
     *  an unmodified one reloads it. */
    async conflict(page) {
        const { token } = await apiUser(page, url);
        const s = await api(url, token, 'POST', '/api/sessions', { name: 'conflict' });
        const uuid = s.json.uuid;
        await page.goto(`${url}/w/${uuid}`);
        await waitReady(page);
        await openFile(page, 'script.py');
        await typeInEditor(page, 'print("mine")');
        const w = await api(url, token, 'PUT', `/api/workspace/${uuid}/files/script.py`, { content: 'print("theirs")' });
        if (w.status !== 200) throw new Error(`PUT: ${w.status} ${w.text}`);
        await page.keyboard.press('ControlOrMeta+s');
        await page.getByTestId('conflict-theirs').waitFor();
        await screenshot(page, out, 'conflict-dialog');
        log('the conflict dialog is shown');
        if ((await fileContent(token, uuid, 'script.py')) !== 'print("theirs")') throw new Error('the other version was overwritten');
        await page.getByTestId('conflict-theirs').click();
        await until('their text in the editor', async () => (await editorText(page)).includes('theirs'));
        log('load theirs: the editor shows their version');

        await typeInEditor(page, 'print("mine again")');
        await api(url, token, 'PUT', `/api/workspace/${uuid}/files/script.py`, { content: 'print("theirs again")' });
        await page.keyboard.press('ControlOrMeta+s');
        await page.getByTestId('conflict-mine').click();
        await until('mine saved', async () => (await fileContent(token, uuid, 'script.py')) === 'print("mine again")');
        log('keep mine: saved over theirs, on purpose');

        await waitTerminal(page, /\$\s*$/m);
        await openFile(page, 'script.py');
        await typeInEditor(page, 'print("unsaved")');
        await typeInTerminal(page, 'echo "print(1)" > script.py\n');
        await page.getByTestId('editor-banner').filter({ hasText: 'changed on disk' }).waitFor({ timeout: 10000 });
        log('a modified editor shows that the file changed underneath');
        await page.getByTestId('banner-theirs').click();
        await until('the editor to show print(1)', async () => (await editorText(page)).trim() === 'print(1)');
        await typeInTerminal(page, 'echo "print(2)" > script.py\n');
        await until('an unmodified editor to follow the disk', async () => (await editorText(page)).trim() === 'print(2)', 10000);
        log('an unmodified editor follows the file');
    },

    /** The gateway restarts under an open terminal: the page reconnects and
     *  shows what the shell printed meanwhile. */
    async reconnect(page) {
        const { token } = await apiUser(page, url);
        const s = await api(url, token, 'POST', '/api/sessions', { name: 'reconnect' });
        await page.goto(`${url}/w/${s.json.uuid}`);
        await waitReady(page);
        await waitTerminal(page, /\$\s*$/m);
        await page.getByTestId('connection').filter({ hasText: 'Connected' }).waitFor();
        await typeInTerminal(page, 'sleep 2; echo printed-while-away\n');
        if ((await harness('restart-gateway')) !== 'ok') throw new Error('the harness did not restart the gateway');
        log('gateway restarted');
        await page.getByTestId('connection').filter({ hasText: 'Connected' }).waitFor({ timeout: 20000 });
        await waitTerminal(page, /printed-while-away/);
        await typeInTerminal(page, 'echo after-$((40+2))\n');
        await waitTerminal(page, /after-42/);
        const text = await terminalText(page);
        const printed = text.split('\n').filter((l) => l.trim() === 'printed-while-away').length;
        if (printed !== 1) throw new Error(`printed ${printed} times, not once:\n${text}`);
        log('reconnected, with what was printed meanwhile, once');

        // another browser (nothing stored) finds the same terminal, not a new shell
        const other = await page.context().browser().newContext();
        const page2 = await other.newPage();
        await page2.addInitScript((t) => sessionStorage.setItem('atelier.token', t), token);
        await page2.goto(`${url}/w/${s.json.uuid}`);
        await waitTerminal(page2, /after-42/);
        const tabs = await page2.getByTestId('terminal-tab').count();
        if (tabs !== 1) throw new Error(`the other browser shows ${tabs} terminal tabs`);
        await other.close();
        log('another browser attached to the same terminal');
    },

    /** A wrong password shows the API's detail; the dashboard's actions
     *  (create with a tier, sleep, wake, scale) act on the real session;
     *  the light theme is remembered; logout. */
    async dashboard(page) {
        const { email } = await apiUser(page, url, false);
        await page.goto(`${url}/login`);
        await page.getByTestId('email').fill(email);
        await page.getByTestId('password').fill('not the password');
        await page.getByTestId('submit').click();
        const detail = (await page.getByTestId('form-error').filter({ hasText: /./ }).textContent()).trim();
        log('wrong password says:', detail);
        if (!/password|credentials|invalid/i.test(detail)) throw new Error(`unclear error: ${detail}`);
        await page.getByTestId('password').fill('correct horse battery');
        await page.getByTestId('submit').click();
        await page.getByTestId('new-session').click();
        const token = await tokenOf(page);
        await page.getByTestId('session-name').fill('bigger');
        await page.getByTestId('tier-standard').check();
        await page.getByTestId('create-session').click();
        await page.waitForURL(/\/w\//);
        const uuid = page.url().split('/w/')[1];
        await waitReady(page);
        await page.locator('a.brand').click();
        const card = page.locator(`[data-testid=session][data-uuid="${uuid}"]`);
        await card.locator('[data-testid=session-status]', { hasText: 'Ready' }).waitFor();
        if (!(await card.textContent()).includes('standard')) throw new Error('the tier is not shown');
        await card.getByTestId('scale').click();
        await until('scaled to large', async () => (await api(url, token, 'GET', `/api/sessions/${uuid}`)).json.tier === 'large', 30000);
        await card.locator('[data-testid=scale]', { hasText: 'Scale down' }).waitFor();
        log('scaled up');
        await card.locator('[data-testid=sleep]:not([disabled])').click();
        await card.locator('[data-testid=session-status]', { hasText: 'Sleeping' }).waitFor({ timeout: 30000 });
        log('asleep');
        await card.getByTestId('wake').click();
        await card.locator('[data-testid=session-status]', { hasText: 'Ready' }).waitFor({ timeout: 30000 });
        log('awake');
        await page.locator('.recent-link').first().waitFor();
        await page.getByTestId('theme-toggle').click();
        await page.reload();
        if ((await page.evaluate(() => document.documentElement.dataset.theme)) !== 'light') throw new Error('the theme was not kept');
        await screenshot(page, out, 'dashboard-light');
        await page.getByTestId('logout').click();
        await page.waitForURL(/\/login/);
        const r = await api(url, token, 'GET', '/api/users/me');
        if (r.status !== 401) throw new Error(`the token still works after logout: ${r.status}`);
    },

    /** The file tree: new folder and file, rename into the folder, upload
     *  (the file picker and a drop), download, delete; the editor follows. */
    async files(page) {
        const { token } = await apiUser(page, url);
        const s = await api(url, token, 'POST', '/api/sessions', { name: 'files' });
        const uuid = s.json.uuid;
        await page.goto(`${url}/w/${uuid}`);
        await waitReady(page);
        await page.getByTestId('new-folder').click();
        await page.getByTestId('prompt-input').fill('src/lib');
        await page.getByTestId('dialog-confirm').click();
        await treeItem(page, 'src/lib').waitFor();
        await page.getByTestId('new-file').click();
        await page.getByTestId('prompt-input').fill('notes.md');
        await page.getByTestId('dialog-confirm').click();
        await page.locator('[data-testid=editor-tab][data-path="notes.md"].active').waitFor();
        await typeInEditor(page, '# notes');
        await page.keyboard.press('ControlOrMeta+s');
        await until('notes.md saved', async () => (await fileContent(token, uuid, 'notes.md')) === '# notes');
        await treeItem(page, 'notes.md').hover();
        await page.locator('.tree-row', { has: treeItem(page, 'notes.md') }).getByTestId('rename').click();
        await page.getByTestId('prompt-input').fill('src/lib/notes.md');
        await page.getByTestId('dialog-confirm').click();
        await treeItem(page, 'src/lib/notes.md').waitFor();
        await page.locator('[data-testid=editor-tab][data-path="src/lib/notes.md"]').waitFor();
        if ((await fileContent(token, uuid, 'src/lib/notes.md')) !== '# notes') throw new Error('the move lost the content');
        log('made a folder and a file, moved the file into it; its tab followed');
        await treeItem(page, 'src').click(); // select the folder: uploads go there
        await page.getByTestId('upload-input').setInputFiles({ name: 'data.csv', mimeType: 'text/csv', buffer: Buffer.from('a,b\n1,2\n') });
        await treeItem(page, 'src/data.csv').waitFor();
        const dt = await page.evaluateHandle(() => {
            const d = new DataTransfer();
            d.items.add(new File(['dropped\n'], 'dropped.txt', { type: 'text/plain' }));
            return d;
        });
        await page.getByTestId('file-tree').dispatchEvent('drop', { dataTransfer: dt });
        await treeItem(page, 'dropped.txt').waitFor();
        if ((await fileContent(token, uuid, 'dropped.txt')) !== 'dropped\n') throw new Error('the dropped file is wrong');
        log('uploaded with the picker and by a drop');
        const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download-zip').click()]);
        const zip = await dl.path();
        const head = (await import('node:fs')).readFileSync(zip).subarray(0, 2).toString();
        if (head !== 'PK') throw new Error('the download is not a zip');
        log('downloaded the workspace as a zip:', dl.suggestedFilename());
        await treeItem(page, 'src/lib/notes.md').hover();
        await page.locator('.tree-row', { has: treeItem(page, 'src/lib/notes.md') }).getByTestId('delete-file').click();
        await page.getByTestId('dialog-confirm').click();
        await until('notes.md gone', async () => (await treeItem(page, 'src/lib/notes.md').count()) === 0);
        if ((await page.locator('[data-testid=editor-tab][data-path="src/lib/notes.md"]').count()) !== 0) throw new Error('the tab of a deleted file stayed');
        if ((await fileContent(token, uuid, 'src/lib/notes.md')) !== null) throw new Error('not deleted');
        await treeItem(page, 'src').hover();
        await page.locator('.tree-row', { has: treeItem(page, 'src') }).getByTestId('delete-file').click();
        await page.getByTestId('dialog-confirm').click();
        await until('src gone', async () => (await treeItem(page, 'src').count()) === 0);
        if ((await api(url, token, 'GET', `/api/workspace/${uuid}/files/src/data.csv`)).status !== 404) throw new Error('the folder was not deleted');
        log('deleted a folder with files in it');
        await page.getByTestId('vim-toggle').click();
        await openFile(page, 'script.py');
        await page.getByTestId('vim-status').filter({ hasText: /NORMAL|--/ }).waitFor();
        log('deleted; Vim mode on');
    },

    /** Phone-sized screen: the tree is behind a button, the terminal works. */
    async phone(page) {
        const { token } = await apiUser(page, url);
        const s = await api(url, token, 'POST', '/api/sessions', { name: 'phone' });
        await page.setViewportSize({ width: 390, height: 760 });
        await page.goto(`${url}/w/${s.json.uuid}`);
        await waitReady(page);
        await page.locator('.files-toggle').click();
        await openFile(page, 'script.py');
        await waitTerminal(page, /\$\s*$/m);
        await typeInTerminal(page, 'echo small-$((6*7))\n');
        await waitTerminal(page, /small-42/);
    },
};

const run = scenarios[name];
if (!run) {
    console.error(`unknown scenario ${name}; have: ${Object.keys(scenarios).join(', ')}`);
    process.exit(2);
}
const browser = await launch();
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const page = await context.newPage();
page.setDefaultTimeout(20000);
const errors = [];
page.on('pageerror', (e) => errors.push(e.message));
page.on('console', (m) => { if (m.type() === 'error') log('console:', m.text()); });
let code = 0;
try {
    await run(page);
    if (errors.length) throw new Error(`errors in the page: ${errors.join('; ')}`);
    log(`${name}: passed`);
} catch (e) {
    log(`${name}: FAILED: ${e.stack || e}`);
    code = 1;
}
try { await screenshot(page, out, name); } catch (e) { log('no screenshot:', e.message); }
await browser.close();
process.exit(code);
