// A few DOM helpers: element builder, toasts and modal dialogs. No framework:
// each page builds its nodes once and updates the ones that change.

type Attrs = Record<string, string | number | boolean | EventListener | undefined | null>;
export type Child = Node | string | null | undefined | false;

/** h('button.primary', {onclick: f, 'data-testid': 'x'}, 'Save') */
export function h<K extends keyof HTMLElementTagNameMap>(
    spec: K | `${K}.${string}` | `${K}#${string}`,
    attrs: Attrs = {},
    ...children: Child[]
): HTMLElementTagNameMap[K] {
    const [tagAndId, ...classes] = spec.split('.');
    const [tag, id] = tagAndId.split('#');
    const el = document.createElement(tag as K);
    if (id) el.id = id;
    if (classes.length) el.className = classes.join(' ');
    for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
        else if (v === true) el.setAttribute(k, '');
        else el.setAttribute(k, String(v));
    }
    append(el, children);
    return el;
}

export function append(el: Element, children: Child[]): void {
    for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
}

export function clear(el: Element, ...children: Child[]): void {
    el.replaceChildren();
    append(el, children);
}

/* ---- toasts: short messages at the bottom, read out by screen readers ---- */

let toasts: HTMLElement | null = null;

export function toast(message: string, kind: 'info' | 'error' = 'info', ms = 5000): void {
    if (!toasts || !toasts.isConnected) {
        toasts = h('div.toasts', { role: 'status', 'aria-live': 'polite' });
        document.body.append(toasts);
    }
    const t = h(`div.toast.${kind}`, { 'data-testid': 'toast' }, message);
    toasts.append(t);
    setTimeout(() => t.remove(), ms);
}

/* ---- modal dialogs (<dialog>: focus trap and Escape come with it) ---- */

export interface Choice<T> {
    label: string;
    value: T;
    kind?: 'primary' | 'danger';
    testid?: string;
}

/** Show a dialog with a message and buttons; resolves with the chosen value,
 *  or `dismissed` when closed with Escape. */
export function choose<T>(title: string, body: Child | Child[], choices: Choice<T>[],
    dismissed: T): Promise<T> {
    return new Promise((resolve) => {
        const dlg = h('dialog.modal', { 'aria-label': title, 'data-testid': 'dialog' });
        const buttons = choices.map((c) =>
            h(`button.${c.kind ?? 'plain'}`, {
                type: 'button',
                'data-testid': c.testid,
                onclick: () => finish(c.value),
            }, c.label));
        append(dlg, [h('h2', {}, title), h('div.modal-body', {}, ...(Array.isArray(body) ? body : [body])),
            h('div.modal-buttons', {}, ...buttons)]);
        let done = false;
        function finish(v: T) {
            if (done) return;
            done = true;
            dlg.close();
            dlg.remove();
            resolve(v);
        }
        dlg.addEventListener('cancel', (e) => { e.preventDefault(); finish(dismissed); });
        document.body.append(dlg);
        dlg.showModal();
        (buttons.find((b) => b.classList.contains('primary')) ?? buttons[0])?.focus();
    });
}

export function confirmDialog(title: string, message: string, action: string): Promise<boolean> {
    return choose(title, message, [
        { label: 'Cancel', value: false, testid: 'dialog-cancel' },
        { label: action, value: true, kind: 'danger', testid: 'dialog-confirm' },
    ], false);
}

/** A dialog with one text field; resolves with the text, or null. */
export function promptDialog(title: string, label: string, value = '',
    validate?: (v: string) => string | null): Promise<string | null> {
    return new Promise((resolve) => {
        const input = h('input', { type: 'text', value, 'aria-label': label, 'data-testid': 'prompt-input',
            autocomplete: 'off', spellcheck: 'false' });
        const err = h('p.form-error', { role: 'alert' });
        const form = h('form', { method: 'dialog' },
            h('label', {}, label, input), err,
            h('div.modal-buttons', {},
                h('button.plain', { type: 'button', 'data-testid': 'dialog-cancel', onclick: () => finish(null) }, 'Cancel'),
                h('button.primary', { type: 'submit', 'data-testid': 'dialog-confirm' }, 'OK')));
        const dlg = h('dialog.modal', { 'aria-label': title, 'data-testid': 'dialog' }, h('h2', {}, title), form);
        let done = false;
        function finish(v: string | null) {
            if (done) return;
            done = true;
            dlg.close();
            dlg.remove();
            resolve(v);
        }
        form.addEventListener('submit', (e) => {
            e.preventDefault();
            const v = input.value.trim();
            const problem = validate ? validate(v) : v ? null : 'Required';
            if (problem) err.textContent = problem;
            else finish(v);
        });
        dlg.addEventListener('cancel', (e) => { e.preventDefault(); finish(null); });
        document.body.append(dlg);
        dlg.showModal();
        input.focus();
        const dot = value.lastIndexOf('.');
        input.setSelectionRange(0, dot > value.lastIndexOf('/') ? dot : value.length);
    });
}

/* ---- theme: dark by default, remembered in localStorage ---- */

export type Theme = 'dark' | 'light';
const themeListeners: ((t: Theme) => void)[] = [];

export function theme(): Theme {
    return document.documentElement.dataset.theme === 'light' ? 'light' : 'dark';
}

export function setTheme(t: Theme): void {
    document.documentElement.dataset.theme = t;
    try { localStorage.setItem('atelier.theme', t); } catch { /* private mode */ }
    for (const f of themeListeners) f(t);
}

/** Call f on each theme change; returns the unsubscribe. */
export function onTheme(f: (t: Theme) => void): () => void {
    themeListeners.push(f);
    return () => {
        const i = themeListeners.indexOf(f);
        if (i >= 0) themeListeners.splice(i, 1);
    };
}

export function themeButton(): HTMLButtonElement {
    const b = h('button.icon', { type: 'button', 'data-testid': 'theme-toggle' });
    const label = () => {
        b.textContent = theme() === 'dark' ? '☀' : '☾';
        b.title = b.ariaLabel = theme() === 'dark' ? 'Light theme' : 'Dark theme';
    };
    b.addEventListener('click', () => { setTheme(theme() === 'dark' ? 'light' : 'dark'); label(); });
    label();
    return b;
}

export function initTheme(): void {
    let t: string | null = null;
    try { t = localStorage.getItem('atelier.theme'); } catch { /* private mode */ }
    document.documentElement.dataset.theme = t === 'light' ? 'light' : 'dark';
}

/** "3 min ago" */
export function ago(iso: string | null | undefined): string {
    if (!iso) return '';
    const s = (Date.now() - Date.parse(iso)) / 1000;
    if (!isFinite(s)) return '';
    if (s < 60) return 'just now';
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
}
