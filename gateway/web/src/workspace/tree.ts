// The file tree: nested folders from the flat list of GET .../files, with
// create, rename/move (also by dragging onto a folder), delete, upload (the
// toolbar or files dropped from the desktop) and download. Keyboard: Tab
// to an item, Enter opens, F2 renames, Delete deletes.
import { ApiError, FileEntry, download, filePath, request } from '../api';
import { confirmDialog, h, promptDialog, toast } from '../dom';

interface Node { entry: FileEntry; children: Map<string, Node> }

export interface TreeEvents {
    open(path: string): void;
    settle(path: string): Promise<void>; // before a move: saves of files under path are done
    moved(from: string, to: string): void;
    deleted(path: string): void;
}

const DRAG_TYPE = 'application/x-atelier-path';

export function checkPath(p: string): string | null {
    if (!p) return 'Enter a name';
    if (p.startsWith('/') || p.endsWith('/')) return 'No leading or trailing /';
    if (p.split('/').some((s) => s === '' || s === '.' || s === '..')) return 'Empty, . or .. parts are not allowed';
    if (/[\\\x00-\x1f]/.test(p)) return 'No backslashes or control characters';
    return null;
}

export class FileTree {
    readonly el: HTMLElement;
    private list: HTMLElement;
    private root: Node = { entry: { name: '', path: '', type: 'folder', size: 0, modified: '' }, children: new Map() };
    private expanded: Set<string>;
    private selected = '';
    private loading: Promise<void> | null = null;
    private again = false;
    private upload: HTMLInputElement;
    private openPath = '';

    constructor(private ws: string, private events: TreeEvents) {
        try { this.expanded = new Set(JSON.parse(sessionStorage.getItem(`atelier.open.${ws}`) || '[]')); } catch { this.expanded = new Set(); }
        this.upload = h('input', { type: 'file', multiple: true, hidden: true, 'data-testid': 'upload-input',
            onchange: () => { if (this.upload.files?.length) this.uploadFiles([...this.upload.files], this.targetFolder()); this.upload.value = ''; } });
        const tool = (label: string, title: string, testid: string, f: () => void) =>
            h('button.icon', { type: 'button', title, 'aria-label': title, 'data-testid': testid, onclick: f }, label);
        this.list = h('ul.tree', { 'aria-label': 'Files', 'data-testid': 'file-tree' });
        this.el = h('nav.files', { 'aria-label': 'Files' },
            h('div.files-head', {}, h('span.files-title', {}, 'Files'),
                tool('+', 'New file', 'new-file', () => this.newFile()),
                tool('⊞', 'New folder', 'new-folder', () => this.newFolder()),
                tool('⇪', 'Upload files', 'upload', () => this.upload.click()),
                tool('⇩', 'Download the workspace as a zip', 'download-zip',
                    () => download(`/api/workspace/${this.ws}/download`, 'workspace.zip').catch((e) => this.fail(e))),
                tool('↻', 'Refresh', 'refresh-tree', () => this.refresh())),
            this.upload, this.list);
        this.dropZone(this.el, '');
    }

    /** Re-read the list (coalesced: one read in flight, one more after it). */
    refresh(): Promise<void> {
        if (this.loading) { this.again = true; return this.loading; }
        this.loading = (async () => {
            try {
                const entries = await request<FileEntry[]>('GET', `/api/workspace/${this.ws}/files`);
                this.build(entries);
                this.render();
            } catch (e) {
                this.fail(e);
            } finally {
                this.loading = null;
                if (this.again) { this.again = false; this.refresh(); }
            }
        })();
        return this.loading;
    }

    has(path: string): boolean { return this.find(path)?.entry.type === 'file'; }

    setOpen(path: string): void {
        this.openPath = path;
        for (const b of this.list.querySelectorAll<HTMLElement>('.tree-item'))
            b.classList.toggle('open', b.dataset.path === path);
        if (path) this.reveal(path);
    }

    private fail(e: unknown): void {
        toast(e instanceof ApiError ? e.detail : String(e), 'error');
    }

    private find(path: string): Node | undefined {
        let n: Node | undefined = this.root;
        for (const part of path.split('/')) { n = n?.children.get(part); if (!n) return undefined; }
        return n;
    }

    private build(entries: FileEntry[]): void {
        this.root.children = new Map();
        const folder = (path: string): Node => {
            if (!path) return this.root;
            const cut = path.lastIndexOf('/');
            const parent = folder(path.slice(0, cut < 0 ? 0 : cut));
            const name = path.slice(cut + 1);
            let n = parent.children.get(name);
            if (!n) {
                n = { entry: { name, path, type: 'folder', size: 0, modified: '' }, children: new Map() };
                parent.children.set(name, n);
            }
            return n;
        };
        for (const e of entries) {
            if (e.type === 'folder') { folder(e.path).entry = e; continue; }
            const cut = e.path.lastIndexOf('/');
            folder(cut < 0 ? '' : e.path.slice(0, cut)).children.set(e.name, { entry: e, children: new Map() });
        }
    }

    private render(): void {
        const rows: HTMLElement[] = [];
        const walk = (n: Node, depth: number) => {
            const kids = [...n.children.values()].sort((a, b) =>
                a.entry.type !== b.entry.type ? (a.entry.type === 'folder' ? -1 : 1) : a.entry.name.localeCompare(b.entry.name));
            for (const k of kids) {
                rows.push(this.row(k, depth));
                if (k.entry.type === 'folder' && this.expanded.has(k.entry.path)) walk(k, depth + 1);
            }
        };
        walk(this.root, 0);
        if (!rows.length) rows.push(h('li.muted.tree-empty', {}, 'No files yet. Create one, or drop files here.'));
        // a re-render (a program writing files) must not take the keyboard away
        const had = this.list.contains(document.activeElement) ? document.activeElement as HTMLElement : null;
        const path = had?.closest('.tree-row')?.querySelector<HTMLElement>('.tree-item')?.dataset.path;
        const testid = had?.dataset.testid;
        this.list.replaceChildren(...rows);
        if (path !== undefined) {
            const row = this.list.querySelector(`.tree-item[data-path="${CSS.escape(path)}"]`)?.closest('.tree-row');
            row?.querySelector<HTMLElement>(`[data-testid="${testid}"]`)?.focus();
        }
    }

    private row(n: Node, depth: number): HTMLElement {
        const e = n.entry;
        const folder = e.type === 'folder';
        const open = this.expanded.has(e.path);
        const item = h('button.tree-item', {
            type: 'button', 'data-path': e.path, 'data-type': e.type, 'data-testid': 'tree-item',
            'aria-expanded': folder ? String(open) : undefined, draggable: 'true',
            style: `padding-left:${0.5 + depth * 0.9}rem`,
            title: folder ? e.path : `${e.path} · ${e.size} bytes`,
        }, h('span.tree-icon', { 'aria-hidden': 'true' }, folder ? (open ? '▾' : '▸') : '·'), h('span.tree-name', {}, e.name));
        item.classList.toggle('open', e.path === this.openPath);
        item.classList.toggle('selected', e.path === this.selected);
        item.addEventListener('click', () => {
            this.selected = e.path;
            if (folder) this.toggle(e.path);
            else this.events.open(e.path);
        });
        item.addEventListener('keydown', (ev) => {
            if (ev.key === 'F2') { ev.preventDefault(); this.rename(e); }
            else if (ev.key === 'Delete') { ev.preventDefault(); this.remove(e); }
        });
        item.addEventListener('dragstart', (ev) => {
            ev.dataTransfer?.setData(DRAG_TYPE, e.path);
            ev.dataTransfer?.setData('text/plain', e.path);
        });
        if (folder) this.dropZone(item, e.path);
        const act = (label: string, title: string, testid: string, f: () => void) =>
            h('button.icon.small', { type: 'button', title, 'aria-label': `${title} ${e.name}`, 'data-testid': testid,
                onclick: (ev: Event) => { ev.stopPropagation(); f(); } }, label);
        return h('li.tree-row', {}, item,
            h('span.tree-actions', {},
                folder ? null : act('⇩', 'Download', 'download-file',
                    () => download(`/api/workspace/${this.ws}/download/${filePath(e.path)}`, e.name).catch((x) => this.fail(x))),
                act('✎', 'Rename or move', 'rename', () => this.rename(e)),
                act('🗑', 'Delete', 'delete-file', () => this.remove(e))));
    }

    private toggle(path: string): void {
        if (this.expanded.has(path)) this.expanded.delete(path);
        else this.expanded.add(path);
        this.saveExpanded();
        this.render();
    }

    /** Open the folders above path, so it shows. */
    private reveal(path: string): void {
        const cut = path.lastIndexOf('/');
        if (cut > 0) this.expandTo(path.slice(0, cut));
    }

    /** Open folder and every folder above it. */
    private expandTo(folder: string): void {
        const parts = folder.split('/');
        let changed = false;
        for (let i = 1; i <= parts.length; i++) {
            const p = parts.slice(0, i).join('/');
            if (!this.expanded.has(p)) { this.expanded.add(p); changed = true; }
        }
        if (changed) { this.saveExpanded(); this.render(); }
    }

    private saveExpanded(): void {
        try { sessionStorage.setItem(`atelier.open.${this.ws}`, JSON.stringify([...this.expanded])); } catch { /* ignore */ }
    }

    /** The folder new things go into: the selected folder, or the selected file's. */
    private targetFolder(): string {
        const n = this.selected ? this.find(this.selected) : undefined;
        if (!n) return '';
        if (n.entry.type === 'folder') return n.entry.path;
        const cut = n.entry.path.lastIndexOf('/');
        return cut < 0 ? '' : n.entry.path.slice(0, cut);
    }

    private async newFile(): Promise<void> {
        const dir = this.targetFolder();
        const p = await promptDialog('New file', 'Path', dir ? dir + '/' : '', checkPath);
        if (!p) return;
        if (this.has(p)) { this.events.open(p); return; }
        try {
            // create only: a file made since the tree was read (by a program,
            // say) answers 412 and is opened, never emptied
            await request('PUT', `/api/workspace/${this.ws}/files/${filePath(p)}`,
                { body: { content: '' }, headers: { 'If-None-Match': '*' } }).catch((e) => {
                if (!(e instanceof ApiError && e.status === 412)) throw e;
            });
            await this.refresh();
            this.events.open(p);
        } catch (e) { this.fail(e); }
    }

    private async newFolder(): Promise<void> {
        const dir = this.targetFolder();
        const p = await promptDialog('New folder', 'Path', dir ? dir + '/' : '', checkPath);
        if (!p) return;
        try {
            await request('POST', `/api/workspace/${this.ws}/folders`, { body: { path: p } });
            this.selected = p;
            await this.refresh();
            this.expandTo(p);
        } catch (e) { this.fail(e); }
    }

    private async rename(e: FileEntry): Promise<void> {
        const to = await promptDialog(`Rename or move ${e.type}`, 'New path', e.path, checkPath);
        if (!to || to === e.path) return;
        this.move(e.path, to);
    }

    private async move(from: string, to: string): Promise<void> {
        try {
            await this.events.settle(from);
            await request('POST', `/api/workspace/${this.ws}/move`, { body: { from, to } });
            this.events.moved(from, to);
            this.selected = to;
            if (this.expanded.delete(from)) this.expanded.add(to);
            await this.refresh();
            this.reveal(to);
        } catch (x) { this.fail(x); }
    }

    private async remove(e: FileEntry): Promise<void> {
        const what = e.type === 'folder' ? `the folder “${e.path}” and everything in it` : `“${e.path}”`;
        if (!(await confirmDialog(`Delete ${e.type}`, `Delete ${what}? This cannot be undone.`, 'Delete'))) return;
        try {
            await this.events.settle(e.path);
            await request('DELETE', `/api/workspace/${this.ws}/files/${filePath(e.path)}${e.type === 'folder' ? '?recursive=true' : ''}`);
            this.events.deleted(e.path);
            await this.refresh();
        } catch (x) { this.fail(x); }
    }

    private async uploadFiles(files: File[], folder: string): Promise<void> {
        const form = new FormData();
        for (const f of files) form.append('files', f, f.name);
        if (folder) form.append('path', folder);
        try {
            await request('POST', `/api/workspace/${this.ws}/upload`, { body: form });
            toast(`Uploaded ${files.length} file${files.length === 1 ? '' : 's'}${folder ? ` to ${folder}` : ''}`);
            await this.refresh();
            if (folder) this.expandTo(folder);
        } catch (e) { this.fail(e); }
    }

    /** Files from the desktop upload into folder; a tree item moves into it. */
    private dropZone(el: HTMLElement, folder: string): void {
        el.addEventListener('dragover', (ev) => {
            const types = ev.dataTransfer?.types ?? [];
            if (!types.includes('Files') && !types.includes(DRAG_TYPE)) return;
            ev.preventDefault();
            ev.stopPropagation();
            el.classList.add('drop');
        });
        el.addEventListener('dragleave', () => el.classList.remove('drop'));
        el.addEventListener('drop', (ev) => {
            el.classList.remove('drop');
            const dt = ev.dataTransfer;
            if (!dt) return;
            ev.preventDefault();
            ev.stopPropagation();
            const from = dt.getData(DRAG_TYPE);
            if (from) {
                const name = from.slice(from.lastIndexOf('/') + 1);
                const to = folder ? `${folder}/${name}` : name;
                if (to !== from && !folder.startsWith(from + '/') && folder !== from) this.move(from, to);
            } else if (dt.files.length) {
                this.uploadFiles([...dt.files], folder);
            }
        });
    }
}
