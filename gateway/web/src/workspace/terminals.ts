// Terminal tabs: xterm.js over the workspace socket. Each tab is one
// terminal of the session (bash in the sandbox). Terminals outlive the page:
// a reload or a reconnect attaches again with the last seq seen, so the
// server replays exactly what was
// missed. The ids are kept in localStorage, so every browser tab of the
// same workspace shows the same terminals (any number of clients may follow
// one) instead of each opening shells of its own.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { request } from '../api';
import { h, onTheme, theme, toast } from '../dom';
import { Msg, Socket } from './socket';

const MAX_TABS = 8;
const PENDING_INPUT_MAX = 64 * 1024; // typed while (re)connecting: sent once attached

const DARK = { background: '#1e1e1e', foreground: '#d4d4d4', cursor: '#d4d4d4', selectionBackground: '#264f78' };
const LIGHT = { background: '#ffffff', foreground: '#1e1e1e', cursor: '#1e1e1e', selectionBackground: '#add6ff' };

interface Tab {
    key: number;
    title: string;
    terminalId: string | null;
    lastSeq: number;
    opening: boolean;
    attached: boolean; // this connection may send it input
    attachedGen: number; // the socket generation it was attached (or asked) on
    retries: number;
    pending: string;   // input typed while not attached
    exited: boolean;
    term: Terminal;
    fit: FitAddon;
    el: HTMLElement;
    button: HTMLElement;
    size: { cols: number; rows: number };
}

export class Terminals {
    readonly el: HTMLElement;
    private tabsEl: HTMLElement;
    private body: HTMLElement;
    private tabs: Tab[] = [];
    private active: Tab | null = null;
    private nextKey = 1;
    private ready = false;
    private storeKey: string;
    private resizeObs: ResizeObserver;
    private closing: string[] = []; // terminal_close to send once connected
    private unTheme: () => void;
    private disposed = false;
    private listed: Promise<void>;

    constructor(private socket: Socket, private sessionId: string) {
        this.storeKey = `atelier.terms.${sessionId}`;
        this.tabsEl = h('div.tabs', { 'aria-label': 'Terminals' });
        this.body = h('div.term-body');
        this.el = h('section.terminals', { 'aria-label': 'Terminals' },
            h('div.tabbar', {}, this.tabsEl,
                h('button.icon', { type: 'button', title: 'New terminal', 'aria-label': 'New terminal',
                    'data-testid': 'new-terminal', onclick: () => this.add(true, null, '', true) }, '+')),
            this.body);
        this.resizeObs = new ResizeObserver(() => this.fitActive());
        this.resizeObs.observe(this.body);
        socket.onMessage((m) => this.onMessage(m));
        socket.onOpen(() => {
            for (const id of this.closing.splice(0)) socket.send({ type: 'terminal_close', terminalId: id });
            this.attachAll();
        });
        socket.onState((st) => { if (st !== 'open') for (const t of this.tabs) t.attached = false; });
        this.unTheme = onTheme(() => { for (const t of this.tabs) t.term.options.theme = theme() === 'dark' ? DARK : LIGHT; });
        for (const saved of this.load()) this.add(false, saved.id, saved.title, false);
        this.listed = this.adopt();
    }

    /** The session's live terminals that this browser does not know yet
     *  (opened from another machine, say): a tab each, attached. */
    private async adopt(): Promise<void> {
        let live: { id: string }[];
        try {
            live = await request<{ id: string }[]>('GET', `/api/sessions/${this.sessionId}/terminals`);
        } catch {
            return; // the local list serves
        }
        if (this.disposed) return;
        for (const t of live.slice(0, MAX_TABS - this.tabs.length))
            if (!this.tabs.some((x) => x.terminalId === t.id)) this.add(false, t.id, '', false);
        this.save();
    }

    /** The session became ready (pod_ready): open what waits, or a first terminal. */
    sessionReady(ready: boolean): void {
        this.ready = ready;
        if (!ready) return;
        this.listed.then(() => {
            if (this.disposed || !this.ready) return;
            if (this.tabs.length === 0) this.add(true, null, '', false);
            else this.attachAll();
        });
    }

    dispose(): void {
        this.disposed = true;
        this.unTheme();
        this.resizeObs.disconnect();
        for (const t of this.tabs) t.term.dispose();
    }

    private load(): { id: string; title: string }[] {
        try { return JSON.parse(localStorage.getItem(this.storeKey) || '[]'); } catch { return []; }
    }

    private save(): void {
        const list = this.tabs.filter((t) => t.terminalId).map((t) => ({ id: t.terminalId, title: t.title }));
        try { localStorage.setItem(this.storeKey, JSON.stringify(list)); } catch { /* full or private */ }
    }

    /** A new tab: attached to terminalId, or opening a new shell. focus:
     *  the user asked for it (not a tab restored or made on load). */
    private add(activate: boolean, terminalId: string | null, title: string, focus: boolean): void {
        if (this.tabs.length >= MAX_TABS) { toast(`At most ${MAX_TABS} terminal tabs`, 'error'); return; }
        const key = this.nextKey++;
        const term = new Terminal({
            cursorBlink: true, fontSize: 14, scrollback: 5000, allowProposedApi: false,
            fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
            theme: theme() === 'dark' ? DARK : LIGHT,
        });
        const fit = new FitAddon();
        term.loadAddon(fit);
        const el = h('div.term', { 'data-testid': 'terminal', hidden: true });
        const tab: Tab = {
            key, title: title || `Terminal ${key}`, terminalId, lastSeq: 0, opening: false, attached: false, pending: '',
            attachedGen: 0, retries: 0, exited: false,
            term, fit, el, button: h('span'), size: { cols: 80, rows: 24 },
        };
        tab.button = h('div.tab', { 'data-testid': 'terminal-tab' },
            h('button.tab-title', { type: 'button', onclick: () => this.activate(tab, true) }, tab.title),
            h('button.tab-close', { type: 'button', title: 'Close terminal', 'aria-label': `Close ${tab.title}`,
                onclick: () => this.close(tab) }, '×'));
        this.tabsEl.append(tab.button);
        this.body.append(el);
        term.open(el);
        term.onData((data) => this.input(tab, data));
        term.attachCustomKeyEventHandler((e) => this.clipboardKeys(tab, e));
        this.tabs.push(tab);
        if (activate || !this.active) this.activate(tab, focus);
        if (terminalId) this.attach(tab);
        else this.open(tab);
    }

    private activate(tab: Tab, focus: boolean): void {
        this.active = tab;
        for (const t of this.tabs) {
            t.el.hidden = t !== tab;
            t.button.classList.toggle('active', t === tab);
            t.button.querySelector('.tab-title')?.setAttribute('aria-current', String(t === tab));
        }
        this.fitActive();
        if (focus) tab.term.focus();
    }

    private fitActive(): void {
        const t = this.active;
        if (!t || t.el.hidden || !this.body.clientWidth || !this.body.clientHeight) return;
        t.fit.fit();
        this.sendSize(t);
    }

    private sendSize(t: Tab): void {
        if (!t.terminalId || (t.size.cols === t.term.cols && t.size.rows === t.term.rows)) return;
        if (this.socket.send({ type: 'terminal_resize', terminalId: t.terminalId, cols: t.term.cols, rows: t.term.rows }))
            t.size = { cols: t.term.cols, rows: t.term.rows };
    }

    private async open(tab: Tab): Promise<void> {
        if (tab.opening || !this.ready || !this.socket.isOpen) return;
        tab.opening = true;
        tab.attachedGen = this.socket.generation;
        if (this.active === tab) tab.fit.fit();
        const m = await this.socket.request({ type: 'terminal_open', sessionId: this.sessionId,
            cols: tab.term.cols, rows: tab.term.rows }).catch((e) => ({ type: 'error', message: String(e.message) } as Msg));
        tab.opening = false;
        if (!this.tabs.includes(tab)) {
            if (m.type === 'terminal_opened') this.socket.send({ type: 'terminal_close', terminalId: m.terminalId });
            return;
        }
        if (m.type !== 'terminal_opened') {
            tab.attachedGen = 0;
            if (m.code !== 'disconnected' && m.code !== 'session_not_ready') {
                tab.term.write(`\r\n\x1b[31m[cannot open a terminal: ${m.message ?? m.code}; trying again]\x1b[0m\r\n`);
                this.retry(tab);
            }
            return; // else tried again on the next pod_ready or reconnect
        }
        tab.terminalId = m.terminalId;
        tab.lastSeq = 0;
        tab.exited = false;
        tab.size = { cols: m.cols, rows: m.rows };
        this.save();
        this.sendSize(tab);
        this.attached(tab);
    }

    /** Try a failed open or attach again later (while the tab lives). */
    private retry(tab: Tab): void {
        const ms = Math.min(1000 * 2 ** tab.retries++, 15000);
        window.setTimeout(() => {
            if (this.disposed || !this.tabs.includes(tab) || tab.exited) return;
            if (tab.terminalId) this.attach(tab);
            else this.open(tab);
        }, ms);
    }

    private attach(tab: Tab): void {
        if (!tab.terminalId || !this.socket.isOpen || tab.attachedGen === this.socket.generation) return;
        tab.attachedGen = this.socket.generation;
        this.socket.request({ type: 'terminal_attach', terminalId: tab.terminalId, lastSeq: tab.lastSeq })
            .then((m) => {
                if (this.disposed || !this.tabs.includes(tab)) return;
                if (m.type === 'error' && m.code !== 'terminal_not_found' && m.code !== 'terminal_closed') {
                    tab.attachedGen = 0;
                    if (m.code !== 'disconnected') {
                        tab.term.write(`\r\n\x1b[33m[cannot attach: ${m.message ?? m.code}; trying again]\x1b[0m\r\n`);
                        this.retry(tab);
                    }
                } else if (m.type === 'error') {
                    tab.terminalId = null;
                    this.save();
                    tab.term.write('\r\n\x1b[2m[that terminal has ended; starting a new one]\x1b[0m\r\n');
                    this.open(tab);
                } else if (m.type === 'terminal_attached') {
                    tab.retries = 0;
                    tab.size = { cols: 0, rows: 0 };
                    this.sendSize(tab);
                    this.attached(tab);
                }
            }).catch(() => { tab.attachedGen = 0; /* the next connection attaches again */ });
    }

    /** The connection may send tab's input: send what was typed meanwhile. */
    private attached(tab: Tab): void {
        tab.attached = true;
        const p = tab.pending;
        tab.pending = '';
        if (p) this.input(tab, p);
    }

    private attachAll(): void {
        for (const t of this.tabs) {
            if (t.attachedGen !== this.socket.generation) t.attached = false;
            if (t.terminalId && !t.exited) this.attach(t);
            else if (!t.terminalId && !t.exited) this.open(t);
        }
    }

    private input(tab: Tab, data: string): void {
        if (tab.exited) {
            if (data === '\r') { tab.exited = false; tab.terminalId = null; tab.term.reset(); this.open(tab); }
            return;
        }
        if (!tab.attached || !tab.terminalId ||
            !this.socket.send({ type: 'terminal_input', sessionId: this.sessionId, terminalId: tab.terminalId, input: data })) {
            tab.attached = false;
            if (tab.pending.length + data.length <= PENDING_INPUT_MAX) tab.pending += data;
            else tab.term.write('\r\n\x1b[33m[not connected: typing dropped]\x1b[0m\r\n');
        }
    }

    /** Ctrl+Shift+C / Ctrl+C with a selection copy; Ctrl+Shift+V pastes. */
    private clipboardKeys(tab: Tab, e: KeyboardEvent): boolean {
        if (e.type !== 'keydown' || !e.ctrlKey) return true;
        const k = e.key.toLowerCase();
        if (k === 'c' && (e.shiftKey || tab.term.hasSelection())) {
            const sel = tab.term.getSelection();
            if (sel) navigator.clipboard?.writeText(sel).catch(() => {});
            tab.term.clearSelection();
            e.preventDefault();
            return false;
        }
        if (k === 'v' && e.shiftKey) {
            if (!navigator.clipboard?.readText) return true; // not a secure origin: the browser's own paste
            navigator.clipboard.readText().then((t) => tab.term.paste(t)).catch(() => toast('The browser did not allow reading the clipboard: use Ctrl+V', 'error'));
            e.preventDefault();
            return false;
        }
        return true;
    }

    private close(tab: Tab): void {
        if (tab.terminalId && !tab.exited && !this.socket.send({ type: 'terminal_close', terminalId: tab.terminalId }))
            this.closing.push(tab.terminalId);
        tab.term.dispose();
        tab.el.remove();
        tab.button.remove();
        this.tabs = this.tabs.filter((t) => t !== tab);
        this.save();
        if (this.active === tab) {
            this.active = null;
            if (this.tabs.length) this.activate(this.tabs[this.tabs.length - 1], true);
        }
    }

    private onMessage(m: Msg): void {
        const tab = m.terminalId ? this.tabs.find((t) => t.terminalId === m.terminalId) : undefined;
        if (!tab) return;
        if (m.type === 'terminal_output') {
            if (m.notice) { tab.term.write(`\x1b[33m${m.output}\x1b[0m`); return; }
            if (typeof m.seq === 'number') {
                if (m.seq <= tab.lastSeq) return;
                tab.lastSeq = m.seq;
            }
            tab.term.write(m.output);
            if (!performance.getEntriesByName('atelier:terminal-output').length) performance.mark('atelier:terminal-output');
        } else if (m.type === 'terminal_exit') {
            tab.exited = true;
            tab.term.write(`\r\n\x1b[2m[exited${m.code === 129 ? ': the session stopped' : ` with code ${m.code}`}; press Enter for a new shell]\x1b[0m\r\n`);
            tab.terminalId = null;
            tab.attached = false;
            this.save();
        } else if (m.type === 'error' && m.code === 'output_lost') {
            tab.term.write(`\r\n\x1b[33m[output ${m.fromSeq}..${m.toSeq} was dropped while you were away]\x1b[0m\r\n`);
        }
    }
}
