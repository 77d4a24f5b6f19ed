// Editor tabs over one Monaco editor: a model per open file, autosave a
// second after the last keystroke, Ctrl+S to save at once. Every save sends
// If-Match with the version the tab was based on: a file changed elsewhere
// meanwhile answers 412, and the user chooses (never a silent overwrite).
// file_changed events reload an unmodified tab and flag a modified one.
//
// No typed text is lost: one save per tab at a time (the next waits for
// it), a failed save is retried, unsaved text is also kept in localStorage
// (restored when the file is opened again: after a crash, an expired login,
// a closed tab), and leaving the page lets the saves in flight finish.
import type * as Monaco from 'monaco-editor/editor/editor.api.js';
import { ApiError, FileContent, download, filePath, request } from '../api';
import { choose, h, onTheme, theme, toast } from '../dom';
import { asset, load } from '../assets';

type EditorModule = typeof import('../editor/index');

const AUTOSAVE_MS = 1000;
const RETRY_MS = [2000, 5000, 15000, 30000];
const STASH_MS = 300;

export type SaveState = 'saved' | 'dirty' | 'saving' | 'error' | 'conflict';

interface Tab {
    path: string;
    model: Monaco.editor.ITextModel | null; // null: a binary file (or the tab is gone)
    sha: string;                            // the server version this tab is based on
    savedAlt: number;                       // the model's alternative version id at that version
    inflight: Promise<boolean> | null;      // the save being sent
    timer: number;                          // autosave or retry
    retries: number;
    conflict: boolean;                      // a 412 waits for the user's choice
    asking: boolean;                        // the conflict dialog is open
    changedOnDisk: '' | 'changed' | 'deleted';
    error: string;
    view: Monaco.editor.ICodeEditorViewState | null;
    button: HTMLElement;
}

interface Stashed { base: string; content: string }

let editorModule: Promise<EditorModule> | null = null;

/** Start loading Monaco (CSS, code, worker set-up) once. */
export function loadMonaco(): Promise<EditorModule> {
    if (!editorModule) {
        editorModule = load<EditorModule>('editor').then((m) => {
            performance.mark('atelier:monaco-code');
            m.setupEnvironment(asset('editor.worker').js);
            return m;
        });
    }
    return editorModule;
}

export class Editors {
    readonly el: HTMLElement;
    private tabsEl: HTMLElement;
    private host: HTMLElement;
    private banner: HTMLElement;
    private placeholder: HTMLElement;
    private vimBar: HTMLElement;
    private tabs: Tab[] = [];
    private active: Tab | null = null;
    private mod: EditorModule | null = null;
    private editor: Monaco.editor.IStandaloneCodeEditor | null = null;
    private vimOff: (() => void) | null = null;
    private disposed = false;
    private stashTimer = 0;
    private unTheme: () => void = () => {};
    private stateListeners: ((s: SaveState, detail: string) => void)[] = [];
    readonly ready: Promise<void>;

    constructor(private ws: string, private onActive: (path: string) => void) {
        this.tabsEl = h('div.tabs', { 'aria-label': 'Open files', 'data-testid': 'editor-tabs' });
        this.banner = h('div.banner', { hidden: true, role: 'alert', 'data-testid': 'editor-banner' });
        this.host = h('div.editor-host', { 'data-testid': 'editor' });
        this.placeholder = h('div.placeholder.muted', {}, 'Open a file from the tree.');
        this.vimBar = h('div.vim-bar', { hidden: true, 'data-testid': 'vim-status' });
        this.el = h('section.editors', { 'aria-label': 'Editor' },
            h('div.tabbar', {}, this.tabsEl), this.banner, this.placeholder, this.host, this.vimBar);
        this.host.hidden = true;
        this.ready = loadMonaco().then((m) => {
            if (this.disposed) return;
            this.mod = m;
            this.editor = m.createEditor(this.host, theme() === 'dark');
            performance.mark('atelier:editor-created');
            this.editor.addCommand(m.saveKey, () => { if (this.active) this.save(this.active, true); });
            this.editor.onDidChangeModelContent(() => this.changed());
            this.unTheme = onTheme((t) => m.setDark(t === 'dark'));
            if (localStorage.getItem('atelier.vim') === '1') this.setVim(true);
        });
        this.ready.catch((e) => toast(`The editor did not load: ${e.message}`, 'error'));
    }

    onSaveState(f: (s: SaveState, detail: string) => void): void {
        this.stateListeners.push(f);
        this.emitState();
    }

    get vimOn(): boolean { return this.vimOff !== null; }

    setVim(on: boolean): void {
        try { localStorage.setItem('atelier.vim', on ? '1' : '0'); } catch { /* ignore */ }
        if (!this.mod || !this.editor) return;
        if (on && !this.vimOff) { this.vimBar.hidden = false; this.vimOff = this.mod.vim(this.editor, this.vimBar); }
        if (!on && this.vimOff) { this.vimOff(); this.vimOff = null; this.vimBar.hidden = true; }
    }

    private isDirty(t: Tab): boolean {
        return !!t.model && t.model.getAlternativeVersionId() !== t.savedAlt;
    }

    anyUnsaved(): boolean {
        return this.tabs.some((t) => this.isDirty(t));
    }

    /** Save every modified tab now. silent: no dialogs, no toasts (leaving). */
    saveAll(silent = false, keepalive = false): Promise<boolean[]> {
        return Promise.all(this.tabs.filter((t) => this.isDirty(t)).map((t) => this.save(t, !silent, false, silent, keepalive)));
    }

    /* ---- unsaved text kept in localStorage ---- */

    private stashKey(): string { return `atelier.unsaved.${this.ws}`; }

    private readStash(): Record<string, Stashed> {
        try { return JSON.parse(localStorage.getItem(this.stashKey()) || '{}'); } catch { return {}; }
    }

    /** Write every modified tab's text (and drop the saved ones) now. */
    stashNow(): void {
        window.clearTimeout(this.stashTimer);
        const all = this.readStash();
        for (const t of this.tabs) {
            if (!t.model) continue;
            if (this.isDirty(t)) all[t.path] = { base: t.sha, content: t.model.getValue() };
            else delete all[t.path];
        }
        try {
            if (Object.keys(all).length) localStorage.setItem(this.stashKey(), JSON.stringify(all));
            else localStorage.removeItem(this.stashKey());
        } catch { /* full: the saves still run */ }
    }

    private unstash(path: string): void {
        const all = this.readStash();
        if (!(path in all)) return;
        delete all[path];
        try {
            if (Object.keys(all).length) localStorage.setItem(this.stashKey(), JSON.stringify(all));
            else localStorage.removeItem(this.stashKey());
        } catch { /* ignore */ }
    }

    private stashSoon(): void {
        window.clearTimeout(this.stashTimer);
        this.stashTimer = window.setTimeout(() => this.stashNow(), STASH_MS);
    }

    /* ---- tabs ---- */

    /** The open tabs and the active one, kept per workspace for the next visit. */
    private remember(): void {
        const state = { open: this.tabs.map((t) => t.path), active: this.active?.path ?? '' };
        try { localStorage.setItem(`atelier.tabs.${this.ws}`, JSON.stringify(state)); } catch { /* ignore */ }
    }

    remembered(): { open: string[]; active: string } | null {
        try { return JSON.parse(localStorage.getItem(`atelier.tabs.${this.ws}`) || 'null'); } catch { return null; }
    }

    /** Open path in a tab (or show its tab); focus: move the keyboard there
     *  (not when tabs reopen on load: the user may be typing elsewhere). */
    async open(path: string, focus = true): Promise<void> {
        const have = this.tabs.find((t) => t.path === path);
        if (have) { this.activate(have, focus); return; }
        let f: FileContent;
        try {
            [f] = await Promise.all([
                request<FileContent>('GET', `/api/workspace/${this.ws}/files/${filePath(path)}`), this.ready]);
        } catch (e) {
            if (!this.disposed) toast(e instanceof ApiError ? e.detail : String(e), 'error');
            return;
        }
        if (this.disposed || !this.mod) return;
        const again = this.tabs.find((t) => t.path === path);
        if (again) { this.activate(again, focus); return; }
        const model = f.encoding === 'base64' ? null : this.mod.modelFor(path, f.content);
        const tab: Tab = {
            path, model, sha: f.sha256, savedAlt: model ? model.getAlternativeVersionId() : 0, inflight: null,
            timer: 0, retries: 0, conflict: false, asking: false, changedOnDisk: '', error: '', view: null,
            button: h('span'),
        };
        const stashed = model ? this.readStash()[path] : undefined;
        if (model && stashed && stashed.content !== f.content) {
            // text that was never saved: back as an edit (undo shows the saved text)
            model.pushEditOperations([], [{ range: model.getFullModelRange(), text: stashed.content }], () => null);
            tab.sha = stashed.base; // based on another version: the save asks first
            toast(`Restored your unsaved changes to ${path}`);
        }
        tab.button = h('div.tab', { 'data-testid': 'editor-tab', 'data-path': path, title: path },
            h('button.tab-title', { type: 'button', onclick: () => this.activate(tab, true) },
                path.slice(path.lastIndexOf('/') + 1)),
            h('span.dirty', { 'aria-label': 'unsaved changes', 'data-testid': 'dirty-marker' }, '●'),
            h('button.tab-close', { type: 'button', 'aria-label': `Close ${path}`, title: 'Close',
                onclick: () => this.close(tab) }, '×'));
        this.tabs.push(tab);
        this.tabsEl.append(tab.button);
        this.activate(tab, focus);
        this.mark(tab);
        if (this.isDirty(tab)) this.schedule(tab, AUTOSAVE_MS);
        performance.mark('atelier:file-shown');
    }

    private activate(tab: Tab, focus = true): void {
        if (this.active && this.active !== tab && this.active.model && this.editor)
            this.active.view = this.editor.saveViewState();
        this.active = tab;
        for (const t of this.tabs) {
            t.button.classList.toggle('active', t === tab);
            t.button.querySelector('.tab-title')?.setAttribute('aria-current', String(t === tab));
        }
        this.placeholder.hidden = !!tab.model;
        this.host.hidden = !tab.model;
        if (!tab.model) {
            const name = tab.path.slice(tab.path.lastIndexOf('/') + 1);
            this.placeholder.replaceChildren(`${tab.path} is a binary file. `,
                h('button.plain', { type: 'button', onclick: () => download(`/api/workspace/${this.ws}/download/${filePath(tab.path)}`, name)
                    .catch((e) => toast(e instanceof ApiError ? e.detail : String(e), 'error')) }, 'Download it'));
        } else if (this.editor) {
            this.editor.setModel(tab.model);
            if (tab.view) this.editor.restoreViewState(tab.view);
            if (focus) this.editor.focus();
        }
        this.renderBanner();
        this.onActive(tab.path);
        this.emitState();
        this.remember();
    }

    private async close(tab: Tab): Promise<void> {
        if (this.isDirty(tab)) {
            const c = await choose('Unsaved changes', `Save the changes to ${tab.path}?`, [
                { label: 'Cancel', value: 'cancel' },
                { label: 'Discard', value: 'discard', kind: 'danger' },
                { label: 'Save', value: 'save', kind: 'primary' },
            ], 'cancel');
            if (c === 'cancel' || !this.tabs.includes(tab)) return;
            if (c === 'save' && !(await this.save(tab, true))) return;
        }
        this.drop(tab);
    }

    private drop(tab: Tab): void {
        window.clearTimeout(tab.timer);
        this.tabs = this.tabs.filter((t) => t !== tab);
        tab.model?.dispose();
        tab.model = null;
        tab.button.remove();
        this.stashNow();
        if (this.active === tab) {
            this.active = null;
            const next = this.tabs[this.tabs.length - 1];
            if (next) this.activate(next, false);
            else {
                this.editor?.setModel(null);
                this.host.hidden = true;
                this.placeholder.hidden = false;
                this.placeholder.textContent = 'Open a file from the tree.';
                this.banner.hidden = true;
                this.onActive('');
            }
        }
        this.emitState();
        this.remember();
    }

    private mark(t: Tab): void {
        t.button.classList.toggle('modified', this.isDirty(t));
    }

    private schedule(t: Tab, ms: number): void {
        window.clearTimeout(t.timer);
        if (!this.disposed) t.timer = window.setTimeout(() => this.save(t, false), ms);
    }

    private changed(): void {
        const t = this.active;
        if (!t || !t.model) return;
        this.mark(t);
        t.retries = 0;
        if (this.isDirty(t) && !t.conflict) this.schedule(t, AUTOSAVE_MS);
        else window.clearTimeout(t.timer);
        this.stashSoon();
        this.emitState();
    }

    /** Write the tab to the server; true when it is saved. One save per tab
     *  at a time: a second waits for the first, then saves what is left. */
    async save(t: Tab, now: boolean, overwrite = false, silent = false, keepalive = false): Promise<boolean> {
        window.clearTimeout(t.timer);
        while (t.inflight) await t.inflight;
        if (!t.model || !this.tabs.includes(t)) return !t.model;
        if (!this.isDirty(t) && !overwrite) return true;
        if (t.conflict && !overwrite) {
            if (now && !silent) this.conflict(t);
            return false;
        }
        const model = t.model;
        const alt = model.getAlternativeVersionId();
        const content = model.getValue();
        const flagged = t.changedOnDisk;
        t.error = '';
        const run = (async (): Promise<boolean> => {
            try {
                const r = await request<{ sha256: string }>('PUT', `/api/workspace/${this.ws}/files/${filePath(t.path)}`, {
                    body: { content }, headers: t.sha ? { 'If-Match': `"${t.sha}"` } : {}, keepalive,
                });
                t.sha = r.sha256;
                if (t.model === model) t.savedAlt = alt;
                if (t.changedOnDisk === flagged) t.changedOnDisk = ''; // a flag raised during the save stays
                t.conflict = false;
                t.retries = 0;
                if (!this.isDirty(t)) this.unstash(t.path);
                return true;
            } catch (e) {
                if (e instanceof ApiError && e.status === 412) {
                    t.conflict = true;
                    if (!silent && !this.disposed) this.conflict(t);
                } else {
                    t.error = e instanceof ApiError ? e.detail : String(e);
                    if (!silent && !this.disposed && t.retries === 0) toast(`Could not save ${t.path}: ${t.error}. Retrying.`, 'error');
                    this.schedule(t, RETRY_MS[Math.min(t.retries++, RETRY_MS.length - 1)]);
                }
                return false;
            }
        })();
        t.inflight = run;
        this.emitState();
        const ok = await run;
        t.inflight = null;
        if (this.disposed || !this.tabs.includes(t)) return ok;
        this.mark(t);
        if (ok && this.isDirty(t) && !t.conflict) this.schedule(t, AUTOSAVE_MS);
        this.stashNow();
        this.renderBanner();
        this.emitState();
        return ok;
    }

    /** A save was refused with 412: the user picks whose version stays. */
    private async conflict(t: Tab): Promise<void> {
        this.renderBanner();
        if (t.asking) return;
        t.asking = true;
        const c = await choose('This file changed elsewhere',
            [h('p', {}, `${t.path} was changed (in a terminal, by a program or in another editor) after you opened it.`),
                h('p.muted', {}, 'Keep yours to replace that version with yours; load theirs to drop your unsaved changes. ' +
                    'Decide later keeps your text here, unsaved.')], [
                { label: 'Decide later', value: 'later', testid: 'conflict-later' },
                { label: 'Load theirs', value: 'theirs', testid: 'conflict-theirs' },
                { label: 'Keep mine', value: 'mine', testid: 'conflict-mine' },
            ], 'later'); // no default: Enter must not overwrite someone's version
        t.asking = false;
        if (this.disposed || !this.tabs.includes(t)) return;
        if (c === 'mine') await this.keepMine(t);
        else if (c === 'theirs') await this.reload(t, false);
    }

    /** Overwrite on purpose: base the save on the server's current version. */
    private async keepMine(t: Tab): Promise<void> {
        try {
            const f = await request<FileContent>('GET', `/api/workspace/${this.ws}/files/${filePath(t.path)}`);
            t.sha = f.sha256;
        } catch (e) {
            if (!(e instanceof ApiError && e.status === 404)) { toast(String((e as Error).message), 'error'); return; }
            t.sha = ''; // deleted meanwhile: saving creates it again
        }
        if (!this.tabs.includes(t)) return;
        t.conflict = false;
        t.changedOnDisk = '';
        await this.save(t, true, true);
    }

    /** Replace the tab's text with the server's version (keeps the cursor).
     *  auto (a file_changed event): only if nothing was typed meanwhile;
     *  else the tab is flagged instead. */
    private async reload(t: Tab, auto: boolean): Promise<void> {
        const before = t.model?.getAlternativeVersionId();
        let f: FileContent;
        try {
            f = await request<FileContent>('GET', `/api/workspace/${this.ws}/files/${filePath(t.path)}`);
        } catch (e) {
            if (!this.tabs.includes(t)) return;
            if (e instanceof ApiError && e.status === 404) { t.changedOnDisk = 'deleted'; this.renderBanner(); return; }
            toast(e instanceof ApiError ? e.detail : String(e), 'error');
            return;
        }
        if (!this.tabs.includes(t) || !t.model || f.encoding === 'base64') return;
        if (auto && (t.model.getAlternativeVersionId() !== before || t.inflight || this.isDirty(t))) {
            if (f.sha256 !== t.sha) t.changedOnDisk = 'changed';
            this.renderBanner();
            return;
        }
        const view = this.active === t ? this.editor?.saveViewState() : null;
        if (t.model.getValue() !== f.content)
            t.model.pushEditOperations([], [{ range: t.model.getFullModelRange(), text: f.content }], () => null);
        if (view) this.editor?.restoreViewState(view);
        t.sha = f.sha256;
        t.savedAlt = t.model.getAlternativeVersionId();
        t.conflict = false;
        t.changedOnDisk = '';
        t.error = '';
        window.clearTimeout(t.timer);
        this.mark(t);
        this.stashNow();
        this.renderBanner();
        this.emitState();
    }

    /** A file_changed event (from the sandbox: a terminal, a program). */
    fileChanged(path: string, change: string, sha: string | undefined): void {
        if (change === 'error') return;
        for (const t of this.tabs) {
            if (!t.model) continue;
            if (change === 'deleted') {
                if (t.path === path || t.path.startsWith(path + '/')) { t.changedOnDisk = 'deleted'; this.renderBanner(); }
                continue;
            }
            if (t.path !== path) continue;
            if (sha && sha === t.sha) {
                if (t.changedOnDisk) { t.changedOnDisk = ''; this.renderBanner(); }
                continue; // our own save coming back, or the same text again
            }
            if (!this.isDirty(t) && !t.inflight) this.reload(t, true);
            else { t.changedOnDisk = 'changed'; this.renderBanner(); }
        }
    }

    /** Many files changed at once: reload what is open and unmodified. */
    manyChanged(paths: string[] | undefined, count: number): void {
        const all = !paths || count > paths.length;
        for (const t of this.tabs)
            if ((all || paths!.includes(t.path)) && !this.isDirty(t) && !t.inflight) this.reload(t, true);
    }

    /** A file or folder was moved in the tree: its tabs follow. */
    renamed(from: string, to: string): void {
        const moved = (p: string) => p === from || p.startsWith(from + '/');
        // a tab already at a destination would share its file's model: it goes
        const dests = new Set(this.tabs.filter((x) => moved(x.path)).map((x) => to + x.path.slice(from.length)));
        for (const t of [...this.tabs]) if (!moved(t.path) && dests.has(t.path)) this.drop(t);
        for (const t of this.tabs) {
            if (!moved(t.path)) continue;
            const path = to + t.path.slice(from.length);
            if (t.model && this.mod) {
                const dirty = this.isDirty(t);
                const view = this.active === t ? this.editor?.saveViewState() : null;
                const value = t.model.getValue();
                t.model.dispose();
                t.model = this.mod.modelFor(path, value);
                t.savedAlt = dirty ? -1 : t.model.getAlternativeVersionId();
                if (this.active === t) { this.editor?.setModel(t.model); if (view) this.editor?.restoreViewState(view); }
            }
            t.path = path;
            t.button.dataset.path = path;
            t.button.title = path;
            t.button.querySelector('.tab-title')!.textContent = path.slice(path.lastIndexOf('/') + 1);
        }
        if (this.active) this.onActive(this.active.path);
        this.stashNow();
        this.remember();
    }

    /** Wait for the saves of the tabs under path (before a move or delete). */
    async settle(path: string): Promise<void> {
        const under = this.tabs.filter((t) => t.path === path || t.path.startsWith(path + '/'));
        for (const t of under) { window.clearTimeout(t.timer); if (t.inflight) await t.inflight; }
    }

    deleted(path: string): void {
        for (const t of [...this.tabs]) if (t.path === path || t.path.startsWith(path + '/')) this.drop(t);
    }

    private renderBanner(): void {
        const t = this.active;
        const b = this.banner;
        const btn = (label: string, testid: string, f: () => void) =>
            h('button.plain', { type: 'button', 'data-testid': testid, onclick: f }, label);
        if (!t || (!t.conflict && !t.changedOnDisk)) { b.hidden = true; return; }
        b.hidden = false;
        if (t.conflict) {
            b.replaceChildren(`${t.path} changed elsewhere; your version is not saved. `,
                btn('Keep mine', 'banner-mine', () => this.keepMine(t)),
                btn('Load theirs', 'banner-theirs', () => this.reload(t, false)));
        } else if (t.changedOnDisk === 'deleted') {
            b.replaceChildren(`${t.path} was deleted outside the editor. `,
                btn('Save it again', 'banner-mine', () => this.keepMine(t)),
                btn('Close', 'banner-close', () => this.drop(t)));
        } else {
            b.replaceChildren(`${t.path} changed on disk while you were editing it. `,
                btn('Keep mine', 'banner-mine', () => this.keepMine(t)),
                btn('Load theirs', 'banner-theirs', () => this.reload(t, false)));
        }
    }

    private emitState(): void {
        let s: SaveState = 'saved';
        let detail = '';
        for (const t of this.tabs) {
            if (t.conflict) { s = 'conflict'; detail = t.path; break; }
            if (t.error && this.isDirty(t)) { s = 'error'; detail = t.error; }
            else if (t.inflight && s !== 'error') s = 'saving';
            else if (this.isDirty(t) && s === 'saved') s = 'dirty';
        }
        for (const f of this.stateListeners) f(s, detail);
    }

    /** The page goes away: keep the unsaved text, let the saves finish
     *  (quietly), then free the models. */
    dispose(): void {
        if (this.disposed) return;
        this.stashNow();
        this.disposed = true;
        this.unTheme();
        const pending = this.tabs.map((t) => (this.isDirty(t) && !t.conflict ? this.save(t, false, false, true) : t.inflight));
        const tabs = this.tabs;
        const editor = this.editor;
        Promise.allSettled(pending).then(() => {
            for (const t of tabs) { window.clearTimeout(t.timer); t.model?.dispose(); t.model = null; }
            editor?.dispose();
        });
    }
}
