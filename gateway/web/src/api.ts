// The gateway's HTTP API, as the IDE uses it. The bearer token lives in
// sessionStorage: it survives a reload of this tab, is gone when the tab
// closes, and is never in a cookie (so no request is made with it that this
// code did not make: no CSRF). The page's CSP (script-src 'self', no inline
// script) is what keeps other scripts from reading it.

export class ApiError extends Error {
    constructor(public status: number, public detail: string, public body: unknown = null) {
        super(detail);
    }
}

export interface User { id: number; email: string; username?: string; is_admin?: boolean }

export interface Session {
    uuid: string;
    name: string;
    status: string;
    status_message?: string | null;
    tier: string;
    replicas: number;
    cpu_millis?: number | null;
    memory_mb?: number | null;
    workspace_id: string;
    created_at: string;
    last_activity?: string;
}

export interface FileEntry { name: string; path: string; type: 'file' | 'folder'; size: number; modified: string }

export interface FileContent {
    path: string; content: string; size: number; modified: string; sha256: string; version: number;
    encoding: 'utf-8' | 'base64'; mode: number;
}

const TOKEN_KEY = 'atelier.token';
const USER_KEY = 'atelier.user';

let token: string | null = null;
let unauthorized: () => void = () => {};

function store(): Storage | null {
    try { return window.sessionStorage; } catch { return null; }
}

export function loadToken(): string | null {
    token = store()?.getItem(TOKEN_KEY) ?? null;
    return token;
}

export function currentUser(): User | null {
    try { return JSON.parse(store()?.getItem(USER_KEY) ?? 'null'); } catch { return null; }
}

export function onUnauthorized(f: () => void): void {
    unauthorized = f;
}

function forget(): void {
    token = null;
    store()?.removeItem(TOKEN_KEY);
    store()?.removeItem(USER_KEY);
}

/** What this browser remembers for the user (recent sessions, open tabs,
 *  terminal ids, unsaved editor text): gone at logout, so the next user of
 *  the browser sees none of it. (An expired token keeps it: the text is
 *  restored after the next login.) */
function forgetLocal(): void {
    try {
        for (const k of Object.keys(localStorage))
            if (/^atelier\.(recent|tabs\.|terms\.|unsaved\.)/.test(k)) localStorage.removeItem(k);
    } catch { /* private mode */ }
}

/** "Bad request" from the API's {"detail": ...}, or the status text. */
function detailOf(status: number, body: unknown, fallback: string): string {
    if (body && typeof body === 'object' && 'detail' in body) {
        const d = (body as { detail: unknown }).detail;
        if (typeof d === 'string') return d;
        if (Array.isArray(d)) return d.map((x) => (x && typeof x === 'object' && 'msg' in x ? String(x.msg) : String(x))).join('; ');
    }
    return fallback || `HTTP ${status}`;
}

export interface RequestOptions {
    body?: unknown;            // JSON-encoded unless FormData or string
    headers?: Record<string, string>;
    raw?: boolean;             // return the Response itself
    signal?: AbortSignal;
    keepalive?: boolean;       // outlive the page (a save started as it unloads)
}

export async function request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const headers: Record<string, string> = { ...opts.headers };
    if (token) headers.Authorization = 'Bearer ' + token;
    let body: BodyInit | undefined;
    if (opts.body instanceof FormData || typeof opts.body === 'string') {
        body = opts.body;
    } else if (opts.body !== undefined) {
        headers['Content-Type'] = 'application/json';
        body = JSON.stringify(opts.body);
    }
    let res: Response;
    try {
        res = await fetch(path, { method, headers, body, signal: opts.signal, cache: 'no-store', keepalive: opts.keepalive });
    } catch (e) {
        if ((e as Error).name === 'AbortError') throw e;
        throw new ApiError(0, 'Cannot reach the server: check your connection');
    }
    if (opts.raw && res.ok) return res as unknown as T;
    const text = await res.text();
    let parsed: unknown = null;
    try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
    if (!res.ok) {
        const err = new ApiError(res.status, detailOf(res.status, parsed, res.statusText), parsed);
        if (res.status === 401 && token && !path.startsWith('/api/users/login')) {
            forget();
            unauthorized();
        }
        throw err;
    }
    return parsed as T;
}

export async function login(email: string, password: string): Promise<User> {
    const r = await request<{ access_token: string; user: User }>('POST', '/api/users/login', { body: { email, password } });
    token = r.access_token;
    store()?.setItem(TOKEN_KEY, token);
    store()?.setItem(USER_KEY, JSON.stringify(r.user));
    return r.user;
}

export async function register(email: string, password: string, username?: string): Promise<void> {
    await request('POST', '/api/users/register', { body: username ? { email, password, username } : { email, password } });
}

export async function logout(): Promise<void> {
    try { await request('POST', '/api/users/logout'); } catch { /* the token goes either way */ }
    forget();
    forgetLocal();
}

/** A single-use WebSocket ticket (30 s): browsers cannot send headers on an upgrade. */
export async function wsTicket(): Promise<string> {
    return (await request<{ ticket: string }>('POST', '/api/ws-ticket')).ticket;
}

/** A path made safe for the URL, one segment at a time. */
export function filePath(p: string): string {
    return p.split('/').map(encodeURIComponent).join('/');
}

/** Save a response's body as a download (a link to a blob: the token is a
 *  header, so a plain <a href> would not be authorised). */
export async function download(path: string, filename: string): Promise<void> {
    const res = await request<Response>('GET', path, { raw: true });
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement('a');
    a.href = url;
    a.download = filename;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
}
