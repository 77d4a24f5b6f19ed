// The workspace's one WebSocket (WS /ws): terminals and the session's
// events. Reconnects by itself (a fresh ticket each time, backing off to
// 5 s, at once when the browser comes back online); whoever needs to
// re-attach listens for 'open'.
import { ApiError, wsTicket } from '../api';

export type Msg = { type: string; [k: string]: any };
export type ConnState = 'connecting' | 'open' | 'offline';

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5000;
const REQUEST_TIMEOUT_MS = 15000;
const PING_MS = 20000;
const SILENT_MAX_MS = 45000; // nothing heard for this long (not even a pong): the link is dead

export class Socket {
    state: ConnState = 'connecting';
    /** Counts connections: what was attached on an older one must attach again. */
    generation = 0;
    private heardAt = 0;
    private ws: WebSocket | null = null;
    private backoff = BACKOFF_MIN_MS;
    private retryTimer = 0;
    private pingTimer = 0;
    private stopped = false;
    private nextId = 1;
    private waiting = new Map<string, { resolve: (m: Msg) => void; timer: number }>();
    private msgListeners = new Set<(m: Msg) => void>();
    private stateListeners = new Set<(s: ConnState) => void>();
    private openListeners = new Set<() => void>();
    private onOnline = () => { if (this.state === 'offline') this.reconnectNow(); };

    constructor(private sessionId: string) {
        window.addEventListener('online', this.onOnline);
        this.connect();
    }

    onMessage(f: (m: Msg) => void): void { this.msgListeners.add(f); }
    onState(f: (s: ConnState) => void): void { this.stateListeners.add(f); f(this.state); }
    /** Called on every (re)connect, once the socket can be written to. */
    onOpen(f: () => void): void { this.openListeners.add(f); if (this.state === 'open') f(); }

    get isOpen(): boolean { return this.state === 'open'; }

    send(m: Msg): boolean {
        if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
        this.ws.send(JSON.stringify(m));
        return true;
    }

    /** Send m with an id and wait for the message that answers it. */
    request(m: Msg): Promise<Msg> {
        const id = `r${this.nextId++}`;
        return new Promise((resolve, reject) => {
            if (!this.send({ ...m, id })) { reject(new Error('not connected')); return; }
            const timer = window.setTimeout(() => {
                this.waiting.delete(id);
                reject(new Error(`no answer to ${m.type}`));
            }, REQUEST_TIMEOUT_MS);
            this.waiting.set(id, { resolve, timer });
        });
    }

    /** Drop the connection and dial again at once. */
    reconnectNow(): void {
        this.backoff = BACKOFF_MIN_MS;
        window.clearTimeout(this.retryTimer);
        if (this.ws) this.ws.close();
        else this.connect();
    }

    close(): void {
        this.stopped = true;
        window.removeEventListener('online', this.onOnline);
        window.clearTimeout(this.retryTimer);
        window.clearInterval(this.pingTimer);
        this.ws?.close(1000);
        this.ws = null;
        this.failWaiting();
    }

    /** Everyone waiting for an answer gets a `disconnected` error. */
    private failWaiting(): void {
        for (const [id, w] of this.waiting) {
            window.clearTimeout(w.timer);
            w.resolve({ type: 'error', code: 'disconnected', message: 'connection lost', id });
        }
        this.waiting.clear();
    }

    private setState(s: ConnState): void {
        if (this.state === s) return;
        this.state = s;
        for (const f of this.stateListeners) f(s);
    }

    private async connect(): Promise<void> {
        if (this.stopped) return;
        this.setState('connecting');
        let ticket: string;
        try {
            ticket = await wsTicket();
        } catch (e) {
            if (e instanceof ApiError && e.status === 401) return; // logged out: the page moves to /login
            this.retry();
            return;
        }
        if (this.stopped) return;
        const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws` +
            `?ticket=${encodeURIComponent(ticket)}&sessionId=${encodeURIComponent(this.sessionId)}`;
        const ws = new WebSocket(url);
        this.ws = ws;
        ws.onopen = () => {
            if (!performance.getEntriesByName('atelier:socket-open').length) performance.mark('atelier:socket-open');
            this.backoff = BACKOFF_MIN_MS;
            this.generation++;
            this.heardAt = Date.now();
            this.setState('open');
            // ?sessionId= already subscribes this connection to the session's events
            window.clearInterval(this.pingTimer);
            this.pingTimer = window.setInterval(() => {
                if (Date.now() - this.heardAt > SILENT_MAX_MS) ws.close(); // half-open: dial again
                else this.send({ type: 'ping' });
            }, PING_MS);
            for (const f of this.openListeners) f();
        };
        ws.onmessage = (ev) => {
            this.heardAt = Date.now();
            if (typeof ev.data !== 'string') return;
            let m: Msg;
            try { m = JSON.parse(ev.data); } catch { return; }
            if (typeof m.id === 'string' && this.waiting.has(m.id)) {
                const w = this.waiting.get(m.id)!;
                this.waiting.delete(m.id);
                window.clearTimeout(w.timer);
                w.resolve(m);
            }
            for (const f of this.msgListeners) f(m);
        };
        ws.onclose = () => {
            if (this.ws !== ws) return;
            this.ws = null;
            window.clearInterval(this.pingTimer);
            this.failWaiting();
            this.retry();
        };
    }

    private retry(): void {
        if (this.stopped) return;
        this.setState('offline');
        window.clearTimeout(this.retryTimer);
        this.retryTimer = window.setTimeout(() => this.connect(), this.backoff);
        this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    }
}
