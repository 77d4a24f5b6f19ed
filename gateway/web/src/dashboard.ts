// The dashboard: the user's sessions with their status, the create wizard,
// and open / sleep / wake / scale / delete.
import { ApiError, Session, currentUser, logout, request } from './api';
import { ago, choose, clear, confirmDialog, h, themeButton, toast } from './dom';
import { preload } from './assets';
import { navigate } from './router';
import { isTransitional, statusKind, statusLabel } from './status';

interface Tier { name: string; cpu_millis: number; memory_mb: number }

/** What each size is for, by its usual name (ATELIER_TIERS may name others). */
const TIER_ABOUT: Record<string, string> = {
    small: 'For scripts and small exercises',
    standard: 'For most projects',
    large: 'For data work and builds',
};

const RECENT_KEY = 'atelier.recent';

export function rememberRecent(uuid: string): void {
    try {
        const r: string[] = JSON.parse(localStorage.getItem(RECENT_KEY) || '[]');
        localStorage.setItem(RECENT_KEY, JSON.stringify([uuid, ...r.filter((x) => x !== uuid)].slice(0, 5)));
    } catch { /* private mode: no recents */ }
}

function recent(): string[] {
    try { return JSON.parse(localStorage.getItem(RECENT_KEY) || '[]'); } catch { return []; }
}

export function dashboardPage(root: HTMLElement): () => void {
    const user = currentUser();
    const list = h('ul.sessions', { 'data-testid': 'session-list' });
    const recentBox = h('section.recent', { 'aria-label': 'Recent sessions' });
    const empty = h('p.muted.empty', { hidden: true }, 'No sessions yet. Create one to get a workspace with a terminal and an editor.');
    const newBtn = h('button.primary', { type: 'button', 'data-testid': 'new-session', onclick: () => wizard() }, '+ New session');
    let timer = 0;
    let alive = true;
    let sessions: Session[] = [];

    root.replaceChildren(
        h('header.bar', {},
            h('span.brand', {}, 'Atelier'), h('span.grow'),
            h('span.muted.user', { 'data-testid': 'user' }, user?.email ?? ''),
            themeButton(),
            h('button.plain', {
                type: 'button', 'data-testid': 'logout',
                onclick: async () => { await logout(); navigate('/login'); },
            }, 'Log out')),
        h('main.dashboard', {},
            h('div.dash-head', {}, h('h1', {}, 'Sessions'), newBtn),
            recentBox, empty, list));
    preload('workspace');

    async function refresh(): Promise<void> {
        window.clearTimeout(timer);
        try {
            sessions = await request<Session[]>('GET', '/api/sessions');
            if (!alive) return;
            render();
        } catch (e) {
            if (!alive) return;
            if (e instanceof ApiError && e.status !== 401) toast(e.detail, 'error');
        }
        if (alive) timer = window.setTimeout(refresh, sessions.some((s) => isTransitional(s.status)) ? 1000 : 5000);
    }

    function render(): void {
        empty.hidden = sessions.length > 0;
        const byId = new Map(sessions.map((s) => [s.uuid, s]));
        const rec = recent().map((u) => byId.get(u)).filter((s): s is Session => !!s).slice(0, 3);
        clear(recentBox, rec.length ? h('h2', {}, 'Recent') : null,
            ...rec.map((s) => h('a.recent-link', { href: `/w/${s.uuid}`, 'data-link': true }, s.name || s.uuid.slice(0, 8),
                h(`span.status.${statusKind(s.status)}`, {}, statusLabel(s.status)))));
        const sorted = [...sessions].sort((a, b) => (b.last_activity ?? b.created_at).localeCompare(a.last_activity ?? a.created_at));
        // the list is redrawn every few seconds: keep the keyboard where it was
        const had = list.contains(document.activeElement) ? document.activeElement as HTMLElement : null;
        const uuid = had?.closest<HTMLElement>('.session')?.dataset.uuid;
        const testid = had?.dataset.testid;
        list.replaceChildren(...sorted.map(card));
        if (uuid) list.querySelector<HTMLElement>(`.session[data-uuid="${uuid}"] [data-testid="${testid}"]`)?.focus();
    }

    function card(s: Session): HTMLElement {
        const busy = isTransitional(s.status);
        const act = (label: string, testid: string, f: () => Promise<unknown>, disabled = false, kind = 'plain') =>
            h(`button.${kind}`, {
                type: 'button', 'data-testid': testid, disabled: disabled || busy,
                onclick: async (e: Event) => {
                    (e.currentTarget as HTMLButtonElement).disabled = true;
                    try { await f(); } catch (ex) { toast(ex instanceof ApiError ? ex.detail : String(ex), 'error'); }
                    refresh();
                },
            }, label);
        const sleeping = s.status === 'sleeping';
        return h('li.session', { 'data-testid': 'session', 'data-uuid': s.uuid, 'data-status': s.status },
            h('div.session-main', {},
                h('a.session-name', { href: `/w/${s.uuid}`, 'data-link': true, 'data-testid': 'open-session' }, s.name || 'Untitled'),
                h(`span.status.${statusKind(s.status)}`, { 'data-testid': 'session-status', role: 'status' }, statusLabel(s.status)),
                s.status_message && s.status === 'error' ? h('span.muted', {}, s.status_message) : null),
            h('div.session-meta.muted', {},
                `${s.tier}${s.cpu_millis ? ` · ${s.cpu_millis / 1000} CPU` : ''}${s.memory_mb ? ` · ${s.memory_mb} MB` : ''}`,
                ` · created ${ago(s.created_at)}`, s.last_activity ? ` · active ${ago(s.last_activity)}` : ''),
            h('div.session-actions', {},
                h('a.button.primary', { href: `/w/${s.uuid}`, 'data-link': true }, 'Open'),
                sleeping
                    ? act('Wake', 'wake', () => request('POST', `/session/${s.uuid}/wake`))
                    : act('Sleep', 'sleep', () => request('POST', `/session/${s.uuid}/sleep`), s.status !== 'ready'),
                act(s.tier === 'large' ? 'Scale down' : 'Scale up', 'scale',
                    () => request('POST', `/session/${s.uuid}/scale`, { body: { scale: s.tier === 'large' ? 'down' : 'up' } }),
                    s.status !== 'ready'),
                act('Delete', 'delete', async () => {
                    if (await confirmDialog('Delete session', `Delete “${s.name || s.uuid}”? Its sandbox stops and its terminals end.`, 'Delete'))
                        await request('DELETE', `/api/sessions/${s.uuid}`);
                }, false, 'danger')));
    }

    async function wizard(): Promise<void> {
        const name = h('input', { type: 'text', value: `session-${new Date().toISOString().slice(5, 16).replace(/[-T:]/g, '')}`,
            maxlength: '255', 'data-testid': 'session-name', 'aria-label': 'Name' });
        let tierList: Tier[];
        try {
            tierList = await request<Tier[]>('GET', '/api/tiers');
        } catch {
            tierList = Object.keys(TIER_ABOUT).map((n) => ({ name: n, cpu_millis: 0, memory_mb: 0 }));
        }
        const tiers = h('fieldset.tiers', {}, h('legend', {}, 'Size'),
            ...tierList.map((t, i) => h('label.tier', {},
                h('input', { type: 'radio', name: 'tier', value: t.name, checked: i === 0, 'data-testid': `tier-${t.name}` }),
                h('b', {}, t.name),
                t.cpu_millis ? h('span', {}, `${t.cpu_millis / 1000} CPU · ${t.memory_mb >= 1024 ? `${t.memory_mb / 1024} GB` : `${t.memory_mb} MB`}`) : null,
                h('span.muted', {}, TIER_ABOUT[t.name] ?? ''))));
        const go = await choose('New session', [h('label', {}, 'Name', name), tiers], [
            { label: 'Cancel', value: false, testid: 'dialog-cancel' },
            { label: 'Create', value: true, kind: 'primary', testid: 'create-session' },
        ], false);
        if (!go) return;
        const tier = (tiers.querySelector('input:checked') as HTMLInputElement | null)?.value ?? 'small';
        newBtn.disabled = true;
        try {
            const s = await request<Session>('POST', '/api/sessions', { body: { name: name.value.trim() || undefined, tier } });
            navigate(`/w/${s.uuid}`);
        } catch (e) {
            toast(e instanceof ApiError ? e.detail : String(e), 'error');
        } finally {
            newBtn.disabled = false;
        }
    }

    refresh();
    return () => { alive = false; window.clearTimeout(timer); };
}
