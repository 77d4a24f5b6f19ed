// /w/{session uuid}: the workspace page. File tree on the left, editor tabs
// above terminal tabs on the right; a bar with the session's status, the
// connection and the save state. Monaco starts loading at once, in
// parallel with the session's status and file list.
import { ApiError, Session, request } from '../api';
import { h, themeButton, toast } from '../dom';
import { isTransitional, statusKind, statusLabel } from '../status';
import { Editors, SaveState, loadMonaco } from './editors';
import { Socket } from './socket';
import { Terminals } from './terminals';
import { FileTree } from './tree';

const SAVE_TEXT: Record<SaveState, string> = {
    saved: 'All changes saved', dirty: 'Unsaved changes', saving: 'Saving…', error: 'Save failed', conflict: 'Conflict',
};

export function mountWorkspace(root: HTMLElement, uuid: string): () => void {
    loadMonaco();
    let alive = true;
    let pollTimer = 0;
    let session: Session | null = null;

    const socket = new Socket(uuid);
    const editors = new Editors(uuid, (p) => tree.setOpen(p));
    const tree = new FileTree(uuid, {
        open: (p) => { editors.open(p); if (narrow.matches) showFiles(false); },
        settle: (p) => editors.settle(p),
        moved: (a, b) => editors.renamed(a, b),
        deleted: (p) => editors.deleted(p),
    });
    const terminals = new Terminals(socket, uuid);

    const name = h('span.ws-name', { 'data-testid': 'session-name' }, '…');
    const status = h('span.status.busy', { 'data-testid': 'session-status' }, statusLabel('initializing'));
    const conn = h('span.conn', { 'data-testid': 'connection', role: 'status' });
    const save = h('span.save-state', { 'data-testid': 'save-state', role: 'status' }, SAVE_TEXT.saved);
    const notice = h('div.banner', { hidden: true, 'data-testid': 'session-banner' });
    const vimBtn = h('button.plain', { type: 'button', 'data-testid': 'vim-toggle', 'aria-pressed': 'false',
        onclick: () => { editors.setVim(!editors.vimOn); vimLabel(); } }, 'Vim');
    const vimLabel = () => vimBtn.setAttribute('aria-pressed', String(editors.vimOn));
    editors.ready.then(vimLabel, () => {});
    const narrow = window.matchMedia('(max-width: 720px)'); // the CSS's phone layout
    const filesBtn = h('button.icon.files-toggle', { type: 'button', 'aria-label': 'Files', title: 'Files',
        'aria-expanded': 'false', onclick: () => showFiles(!layout.classList.contains('show-files')) }, '☰');
    function showFiles(on: boolean): void {
        layout.classList.toggle('show-files', on);
        filesBtn.setAttribute('aria-expanded', String(on));
        if (on) tree.el.querySelector<HTMLElement>('.tree-item, button')?.focus();
    }

    const layout = h('div.workspace', {},
        tree.el,
        h('div.work', {}, editors.el, terminals.el));
    root.replaceChildren(
        h('header.bar', {},
            filesBtn,
            h('a.brand', { href: '/', 'data-link': true, title: 'All sessions' }, '← Atelier'),
            name, status, h('span.grow'), save, conn, vimBtn, themeButton()),
        notice, layout);

    socket.onState((s) => {
        conn.className = `conn ${s}`;
        conn.textContent = s === 'open' ? '● Connected' : s === 'connecting' ? '◌ Connecting…' : '○ Reconnecting…';
        conn.title = s === 'open' ? 'Live: terminals and file events' : 'The connection dropped: retrying';
    });
    editors.onSaveState((s, detail) => {
        save.textContent = SAVE_TEXT[s];
        save.className = `save-state ${s}`;
        save.title = detail;
    });

    socket.onMessage((m) => {
        if (m.sessionId && m.sessionId !== uuid) return;
        if (m.type === 'pod_ready') {
            setStatus('ready');
            tree.refresh();
        } else if (m.type === 'status' && typeof m.status === 'string') {
            setStatus(m.status, m.message);
        } else if (m.type === 'file_changed') {
            tree.refresh();
            if (m.change === 'many') editors.manyChanged(m.paths, m.count ?? 0);
            else if (typeof m.path === 'string') editors.fileChanged(m.path, m.change, m.sha256);
            if (m.change === 'conflict') toast(`Both changed ${m.path}: the other version is kept as ${m.conflictPath}`, 'error', 10000);
            if (m.change === 'error') toast(`${m.path ?? 'A file'} did not sync: ${m.message}`, 'error', 10000);
        } else if (m.type === 'oom') {
            toast('A program in the sandbox ran out of memory and was stopped (the session\'s memory limit).', 'error', 10000);
        }
    });

    function setStatus(s: string, message?: string): void {
        const was = session?.status;
        if (session) session.status = s;
        status.textContent = statusLabel(s);
        status.className = `status ${statusKind(s)}`;
        status.dataset.status = s;
        terminals.sessionReady(s === 'ready');
        if (s === 'sleeping') {
            notice.hidden = false;
            notice.replaceChildren('This session is sleeping: its files are kept, its processes stopped. ',
                h('button.primary', { type: 'button', 'data-testid': 'wake', onclick: wake }, 'Wake it'));
        } else if (s === 'error') {
            notice.hidden = false;
            notice.replaceChildren(`The session failed: ${message ?? session?.status_message ?? 'unknown error'}`);
        } else if (s === 'terminated' || s === 'terminating') {
            notice.hidden = false;
            notice.replaceChildren('This session was deleted. ', h('a', { href: '/', 'data-link': true }, 'Back to your sessions'));
        } else {
            notice.hidden = true;
        }
        if (was !== s) schedulePoll();
    }

    async function wake(): Promise<void> {
        try {
            await request('POST', `/session/${uuid}/wake`);
            setStatus('waking');
        } catch (e) { toast(e instanceof ApiError ? e.detail : String(e), 'error'); }
    }

    /** Events carry status changes; a slow poll while it moves covers a missed one. */
    function schedulePoll(): void {
        window.clearTimeout(pollTimer);
        if (alive && session && isTransitional(session.status)) pollTimer = window.setTimeout(poll, 1500);
    }

    async function poll(): Promise<void> {
        try {
            session = await request<Session>('GET', `/api/sessions/${uuid}`);
            if (!alive) return;
            name.textContent = session.name || 'Untitled';
            document.title = `${session.name || 'Workspace'} · Atelier`;
            setStatus(session.status, session.status_message ?? undefined);
            if (!performance.getEntriesByName('atelier:session-status').length) performance.mark('atelier:session-status');
        } catch (e) {
            if (!alive) return;
            if (e instanceof ApiError && e.status === 404) {
                root.replaceChildren(h('main.center', {}, h('h1', {}, 'No such session'),
                    h('p', {}, 'It may have been deleted. '), h('a', { href: '/', 'data-link': true }, 'Back to your sessions')));
                dispose();
                return;
            }
            if (!(e instanceof ApiError && e.status === 401)) pollTimer = window.setTimeout(poll, 3000);
        }
    }

    /* Ctrl+S saves everything; F6 / Shift+F6 moves between files, editor and
     * terminal (the terminal keeps Tab for the shell, Monaco for indenting);
     * Escape closes the files panel on a phone. */
    const panes = () => [tree.el, editors.el, terminals.el];
    const onKey = (e: KeyboardEvent) => {
        if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 's') { e.preventDefault(); editors.saveAll(); }
        else if (e.key === 'F6') {
            e.preventDefault();
            const list = panes();
            const at = list.findIndex((p) => p.contains(document.activeElement));
            const next = list[(at + (e.shiftKey ? list.length - 1 : 1) + list.length) % list.length];
            if (next === tree.el && narrow.matches) showFiles(true);
            const target = next.querySelector<HTMLElement>('.xterm-helper-textarea, .monaco-editor textarea, .tree-item, button');
            target?.focus();
        } else if (e.key === 'Escape' && layout.classList.contains('show-files')) {
            showFiles(false);
            filesBtn.focus();
        }
    };
    const onLeave = (e: BeforeUnloadEvent) => {
        if (!editors.anyUnsaved()) return;
        editors.stashNow(); // restored on the next visit if the saves do not make it
        editors.saveAll(true, true);
        e.preventDefault();
        e.returnValue = '';
    };
    window.addEventListener('keydown', onKey);
    window.addEventListener('beforeunload', onLeave);

    poll();
    tree.refresh().then(reopen);

    /** The tabs of the last visit, or the workspace's starting file. */
    async function reopen(): Promise<void> {
        if (!alive) return;
        const r = editors.remembered();
        const open = (r?.open ?? []).filter((p) => tree.has(p));
        if (!r) for (const p of ['script.py', 'main.py', 'README.md']) if (tree.has(p)) { open.push(p); break; }
        for (const p of open) await editors.open(p, false);
        if (r?.active && open.includes(r.active)) await editors.open(r.active, false);
    }

    let disposed = false;
    function dispose(): void {
        if (disposed) return;
        disposed = true;
        alive = false;
        window.clearTimeout(pollTimer);
        window.removeEventListener('keydown', onKey);
        window.removeEventListener('beforeunload', onLeave);
        socket.close();
        terminals.dispose();
        editors.dispose();
    }
    return dispose;
}
