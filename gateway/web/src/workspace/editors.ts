// Editor tabs over one Monaco editor: a model per open file, autosave a
// second after the last keystroke, Ctrl+S to save at once. Every save sends
// If-Match with the version the tab was based on: a file changed elsewhere
// meanwhile answers 412, and the user chooses (never a silent overwrite).
// file_changed events reload an unmodified tab and flag a modified one.
import type * as Monaco from 'monaco-editor/editor/editor.api.js';
import { ApiError, FileContent, download, filePath, request } from '../api';
import { choose, h, onTheme, theme, toast } from '../dom';
import { asset, load } from '../assets';

type EditorModule = typeof import('../editor/index');

const AUTOSAVE_MS = 1000;

export type SaveState = 'saved' | 'dirty' | 'saving' | 'error' | 'conflict';

interface Tab {
    path: string;
    model: Monaco.editor.ITextModel | null; // null: a binary file, not editable here
    sha: string;                            // the server version this tab is based on
    savedAlt: number;                       // the model's alternative version id at that version
    saving: boolean;
    timer: number;
    conflict: boolean;                      // a 412 waits for the user's choice
    changedOnDisk: '' | 'changed' | 'deleted';
    error: string;
    view: Monaco.editor.ICodeEditorViewState | null;
    button: HTMLElement;
}

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
    private stateListeners: ((s: SaveState, detail: string) => void)[] = [];
    readonly ready: Promise<void>;

    constructor(private ws: string, private onActive: (path: string) => void) {
        this.tabsEl = h('div.tabs', { role: 'tablist', 'aria-label': 'Open files', 'data-testid': 'editor-tabs' });
        this.banner = h('div.banner', { hidden: true, role: 'alert', 'data-testid': 'editor-banner' });
        this.host = h('div.editor-host', { 'data-testid': 'editor' });
        this.placeholder = h('div.placeholder.muted', {}, 'Open a file from the tree.');
        this.vimBar = h('div.vim-bar', { hidden: true, 'data-testid': 'vim-status' });
        this.el = h('section.editors', { 'aria-label': 'Editor' },
            h('div.tabbar', {}, this.tabsEl), this.banner, this.placeholder, this.host, this.vimBar);
        this.host.hidden = true;
        this.ready = loadMonaco().then((m) => {
            this.mod = m;
            this.editor = m.createEditor(this.host, theme() === 'dark');
            performance.mark('atelier:editor-created');
            this.editor.addCommand(m.saveKey, () => { if (this.active) this.save(this.active, true); });
            this.editor.onDidChangeModelContent(() => this.changed());
            onTheme((t) => m.setDark(t === 'dark'));
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

    isDirty(t: Tab): boolean {
        return !!t.model && t.model.getAlternativeVersionId() !== t.savedAlt;
    }

    anyUnsaved(): boolean {
        return this.tabs.some((t) => this.isDirty(t));
    }

    /** Save every modified tab now (Ctrl+S outside the editor, leaving the page). */
    saveAll(): void {
        for (const t of this.tabs) if (this.isDirty(t)) this.save(t, true);
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
            toast(e instanceof ApiError ? e.detail : String(e), 'error');
            return;
        }
        const again = this.tabs.find((t) => t.path === path);
        if (again) { this.activate(again, focus); return; }
        const model = f.encoding === 'base64' ? null : this.mod!.modelFor(path, f.content);
        const tab: Tab = {
            path, model, sha: f.sha256, savedAlt: model ? model.getAlternativeVersionId() : 0, saving: false,
            timer: 0, conflict: false, changedOnDisk: '', error: '', view: null, button: h('span'),
        };
        tab.button = h('div.tab', { role: 'tab', tabindex: '0', 'data-testid': 'editor-tab', 'data-path': path,
            title: path, onclick: () => this.activate(tab),
            onkeydown: (e: Event) => { if ((e as KeyboardEvent).key === 'Enter') this.activate(tab); } },
            h('span.tab-title', {}, path.slice(path.lastIndexOf('/') + 1)),
            h('span.dirty', { 'aria-label': 'unsaved changes', 'data-testid': 'dirty-marker' }, '●'),
            h('button.tab-close', { type: 'button', 'aria-label': `Close ${path}`, title: 'Close',
                onclick: (e: Event) => { e.stopPropagation(); this.close(tab); } }, '×'));
        this.tabs.push(tab);
        this.tabsEl.append(tab.button);
        this.activate(tab, focus);
        performance.mark('atelier:file-shown');
    }

    /** The open tabs and the active one, kept per workspace for the next visit. */
    private remember(): void {
        const state = { open: this.tabs.map((t) => t.path), active: this.active?.path ?? '' };
        try { localStorage.setItem(`atelier.tabs.${this.ws}`, JSON.stringify(state)); } catch { /* ignore */ }
    }

    remembered(): { open: string[]; active: string } | null {
        try { return JSON.parse(localStorage.getItem(`atelier.tabs.${this.ws}`) || 'null'); } catch { return null; }
    }

    private activate(tab: Tab, focus = true): void {
        if (this.active && this.active !== tab && this.active.model && this.editor)
            this.active.view = this.editor.saveViewState();
        this.active = tab;
        for (const t of this.tabs) {
            t.button.classList.toggle('active', t === tab);
            t.button.setAttribute('aria-selected', String(t === tab));
        }
        this.placeholder.hidden = !!tab.model;
        this.host.hidden = !tab.model;
        if (!tab.model) {
            this.placeholder.replaceChildren(`${tab.path} is a binary file. `,
                h('button.plain', { type: 'button', onclick: () => download(`/api/workspace/${this.ws}/download/${filePath(tab.path)}`,
                    tab.path.slice(tab.path.lastIndexOf('/') + 1)) }, 'Download it'));
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
            if (c === 'cancel') return;
            if (c === 'save' && !(await this.save(tab, true))) return;
        }
        this.drop(tab);
    }

    private drop(tab: Tab): void {
        window.clearTimeout(tab.timer);
        tab.model?.dispose();
        tab.button.remove();
        this.tabs = this.tabs.filter((t) => t !== tab);
        if (this.active === tab) {
            this.active = null;
            const next = this.tabs[this.tabs.length - 1];
            if (next) this.activate(next);
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
        if (!this.disposed) this.remember();
    }

    private changed(): void {
        const t = this.active;
        if (!t || !t.model) return;
        t.button.classList.toggle('modified', this.isDirty(t));
        window.clearTimeout(t.timer);
        if (this.isDirty(t) && !t.conflict) t.timer = window.setTimeout(() => this.save(t, false), AUTOSAVE_MS);
        this.emitState();
    }

    /** Write the tab to the server; true when it is saved. */
    async save(t: Tab, now: boolean, overwrite = false): Promise<boolean> {
        window.clearTimeout(t.timer);
        if (!t.model || (!this.isDirty(t) && !overwrite)) return true;
        if (t.conflict && !overwrite) { if (now) this.conflict(t); return false; }
        if (t.saving) { if (now) t.timer = window.setTimeout(() => this.save(t, true), 50); return false; }
        const alt = t.model.getAlternativeVersionId();
        const content = t.model.getValue();
        t.saving = true;
        t.error = '';
        this.emitState();
        try {
            const r = await request<{ sha256: string }>('PUT', `/api/workspace/${this.ws}/files/${filePath(t.path)}`, {
                body: { content }, headers: t.sha ? { 'If-Match': `"${t.sha}"` } : {},
            });
            t.sha = r.sha256;
            t.savedAlt = alt;
            t.changedOnDisk = '';
            t.conflict = false;
            return true;
        } catch (e) {
            if (e instanceof ApiError && e.status === 412) {
                t.conflict = true;
                this.conflict(t);
            } else {
                t.error = e instanceof ApiError ? e.detail : String(e);
                toast(`Could not save ${t.path}: ${t.error}`, 'error');
            }
            return false;
        } finally {
            t.saving = false;
            if (this.disposed) return false; // eslint-disable-line no-unsafe-finally
            t.button.classList.toggle('modified', this.isDirty(t));
            if (this.isDirty(t) && !t.conflict && !t.error && this.tabs.includes(t))
                t.timer = window.setTimeout(() => this.save(t, false), AUTOSAVE_MS);
            this.renderBanner();
            this.emitState();
        }
    }

    /** A save was refused with 412: the user picks whose version stays. */
    private async conflict(t: Tab): Promise<void> {
        this.renderBanner();
        const c = await choose('This file changed elsewhere',
            [h('p', {}, `${t.path} was changed (in a terminal, by a program or in another editor) after you opened it.`),
                h('p.muted', {}, 'Keep yours to replace that version with yours; load theirs to drop your unsaved changes. ' +
                    'Decide later keeps your text here, unsaved.')], [
                { label: 'Decide later', value: 'later', testid: 'conflict-later' },
                { label: 'Load theirs', value: 'theirs', testid: 'conflict-theirs' },
                { label: 'Keep mine', value: 'mine', kind: 'primary', testid: 'conflict-mine' },
            ], 'later');
        if (c === 'mine') await this.keepMine(t);
        else if (c === 'theirs') await this.reload(t);
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
        t.conflict = false;
        t.changedOnDisk = '';
        await this.save(t, true, true);
    }

    /** Replace the tab's text with the server's version (keeps the cursor). */
    private async reload(t: Tab): Promise<void> {
        let f: FileContent;
        try {
            f = await request<FileContent>('GET', `/api/workspace/${this.ws}/files/${filePath(t.path)}`);
        } catch (e) {
            if (e instanceof ApiError && e.status === 404) { t.changedOnDisk = 'deleted'; this.renderBanner(); return; }
            toast(e instanceof ApiError ? e.detail : String(e), 'error');
            return;
        }
        if (!t.model || f.encoding === 'base64') return;
        const view = this.active === t ? this.editor?.saveViewState() : null;
        if (t.model.getValue() !== f.content) {
            t.model.pushEditOperations([], [{ range: t.model.getFullModelRange(), text: f.content }], () => null);
        }
        if (view) this.editor?.restoreViewState(view);
        t.sha = f.sha256;
        t.savedAlt = t.model.getAlternativeVersionId();
        t.conflict = false;
        t.changedOnDisk = '';
        t.button.classList.remove('modified');
        this.renderBanner();
        this.emitState();
    }

    /** A file_changed event (from the sandbox: a terminal, a program). */
    fileChanged(path: string, change: string, sha: string | undefined): void {
        const t = this.tabs.find((x) => x.path === path);
        if (!t || !t.model) return;
        if (change === 'deleted') {
            t.changedOnDisk = 'deleted';
        } else if (sha && sha === t.sha) {
            return; // our own save coming back
        } else if (!this.isDirty(t) && !t.saving) {
            this.reload(t);
            return;
        } else {
            t.changedOnDisk = 'changed';
        }
        this.renderBanner();
    }

    /** Many files changed at once: reload what is open and unmodified. */
    manyChanged(paths: string[] | undefined): void {
        for (const t of this.tabs)
            if ((!paths || paths.includes(t.path)) && !this.isDirty(t) && !t.saving) this.reload(t);
    }

    renamed(from: string, to: string): void {
        for (const t of this.tabs) {
            if (t.path !== from && !t.path.startsWith(from + '/')) continue;
            const path = to + t.path.slice(from.length);
            if (t.model && this.mod) {
                const value = t.model.getValue();
                const dirty = this.isDirty(t);
                const view = this.active === t ? this.editor?.saveViewState() : null;
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
                btn('Load theirs', 'banner-theirs', () => this.reload(t)));
        } else if (t.changedOnDisk === 'deleted') {
            b.replaceChildren(`${t.path} was deleted outside the editor. `,
                btn('Save it again', 'banner-mine', () => this.keepMine(t)),
                btn('Close', 'banner-close', () => this.drop(t)));
        } else {
            b.replaceChildren(`${t.path} changed on disk while you were editing it. `,
                btn('Keep mine', 'banner-mine', () => this.keepMine(t)),
                btn('Load theirs', 'banner-theirs', () => this.reload(t)));
        }
    }

    private emitState(): void {
        let s: SaveState = 'saved';
        let detail = '';
        for (const t of this.tabs) {
            if (t.conflict) { s = 'conflict'; detail = t.path; break; }
            if (t.error && this.isDirty(t)) { s = 'error'; detail = t.error; }
            else if (t.saving && s !== 'error') s = 'saving';
            else if (this.isDirty(t) && s === 'saved') s = 'dirty';
        }
        for (const f of this.stateListeners) f(s, detail);
    }

    layout(): void { this.editor?.layout(); }

    dispose(): void {
        this.disposed = true;
        for (const t of this.tabs) { window.clearTimeout(t.timer); t.model?.dispose(); }
        this.editor?.dispose();
    }
}
