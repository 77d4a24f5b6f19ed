// What the browser tests and the web benchmark share: Debian's Chromium
// driven by playwright-core (from gateway/web's npm install; no browser is
// downloaded), and the steps a user takes in the IDE.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';

const here = path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(path.join(here, '../../gateway/web/package.json'));
const { chromium } = require('playwright-core');

export const CHROMIUM = process.env.ATELIER_CHROMIUM || '/usr/bin/chromium';

export async function launch() {
    return chromium.launch({
        executablePath: CHROMIUM,
        headless: true,
        // root in a container: Chromium's own sandbox needs user namespaces
        // it may not get; /dev/shm may be small
        args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
    });
}

/** Ask the test harness (pytest, on the other end of stdin/stdout) to do
 *  something outside the browser, such as restart the gateway. */
const lines = readline.createInterface({ input: process.stdin });
const pending = [];
lines.on('line', (l) => { const p = pending.shift(); if (p) p(l); });
export function harness(request) {
    return new Promise((resolve) => {
        pending.push(resolve);
        process.stdout.write(`@@${request}\n`);
    });
}

export function log(...a) {
    console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...a);
}

export function uniqueEmail() {
    return `u${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}@example.com`;
}

export const PASSWORD = 'correct horse battery';

export async function register(page, url, email) {
    await page.goto(url + '/');
    await page.waitForURL(/\/login/);
    await page.getByTestId('switch-auth').click();
    await page.waitForURL(/\/register/);
    await page.getByTestId('email').fill(email);
    await page.getByTestId('password').fill(PASSWORD);
    await page.getByTestId('submit').click();
    await page.getByTestId('new-session').waitFor();
}

export async function login(page, url, email) {
    await page.goto(url + '/login');
    await page.getByTestId('email').fill(email);
    await page.getByTestId('password').fill(PASSWORD);
    await page.getByTestId('submit').click();
    await page.getByTestId('new-session').waitFor();
}

/** A user made through the API, logged in on page (token in sessionStorage)
 *  unless loggedIn is false. */
export async function apiUser(page, url, loggedIn = true) {
    const email = uniqueEmail();
    let r = await fetch(url + '/api/users/register', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ email, password: PASSWORD }) });
    if (r.status !== 201) throw new Error(`register: ${r.status} ${await r.text()}`);
    r = await fetch(url + '/api/users/login', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ email, password: PASSWORD }) });
    const j = await r.json();
    if (loggedIn) await page.addInitScript(([t, u]) => {
        sessionStorage.setItem('atelier.token', t);
        sessionStorage.setItem('atelier.user', u);
    }, [j.access_token, JSON.stringify(j.user)]);
    return { email, token: j.access_token };
}

export async function api(url, token, method, p, body, headers = {}) {
    const r = await fetch(url + p, { method, headers: { Authorization: 'Bearer ' + token,
        ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
        body: body !== undefined ? JSON.stringify(body) : undefined });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch { /* not JSON */ }
    return { status: r.status, json, text };
}

export async function tokenOf(page) {
    return page.evaluate(() => sessionStorage.getItem('atelier.token'));
}

/** From the dashboard: the wizard, then the workspace page it opens. */
export async function createSession(page, name) {
    await page.getByTestId('new-session').click();
    await page.getByTestId('session-name').fill(name);
    await page.getByTestId('create-session').click();
    await page.waitForURL(/\/w\/[0-9a-f-]{36}$/);
    return page.url().split('/w/')[1];
}

export async function waitReady(page, timeout = 60000) {
    await page.locator('header [data-testid=session-status][data-status=ready]').waitFor({ timeout });
}

export function treeItem(page, p) {
    return page.locator(`[data-testid=tree-item][data-path="${p}"]`);
}

export async function openFile(page, p) {
    await treeItem(page, p).click();
    await page.locator(`[data-testid=editor-tab][data-path="${p}"].active`).waitFor();
    await page.locator('[data-testid=editor] .monaco-editor').waitFor();
}

/** Replace the open editor's text by typing it (as a user would). */
export async function typeInEditor(page, text) {
    await page.locator('[data-testid=editor] .monaco-editor .view-lines').click();
    await page.keyboard.press('ControlOrMeta+a');
    await page.keyboard.press('Delete');
    await page.keyboard.type(text);
}

export async function editorText(page) {
    return page.evaluate(() => [...document.querySelectorAll('[data-testid=editor] .view-line')]
        .map((l) => l.textContent.replace(/\u00a0/g, ' ')).join('\n'));
}

const activeTerm = '[data-testid=terminal]:not([hidden])';

export async function terminalText(page) {
    return page.evaluate((sel) => {
        const rows = document.querySelector(sel + ' .xterm-rows');
        return rows ? [...rows.children].map((r) => r.textContent.replace(/\u00a0/g, ' ')).join('\n') : '';
    }, activeTerm);
}

export async function waitTerminal(page, re, timeout = 20000) {
    const src = re.source;
    const flags = re.flags;
    await page.waitForFunction(([sel, s, f]) => {
        const rows = document.querySelector(sel + ' .xterm-rows');
        return rows && new RegExp(s, f).test([...rows.children].map((r) => r.textContent.replace(/\u00a0/g, ' ')).join('\n'));
    }, [activeTerm, src, flags], { timeout, polling: 50 });
}

export async function typeInTerminal(page, text) {
    await page.locator(activeTerm + ' .xterm-screen').click();
    await page.keyboard.type(text);
}

export async function screenshot(page, out, name) {
    fs.mkdirSync(out, { recursive: true });
    const file = path.join(out, `${name}.png`);
    await page.screenshot({ path: file });
    log('screenshot', file);
    return file;
}
