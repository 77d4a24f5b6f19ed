// The first page: routes to login, register, the dashboard or a workspace.
// The workspace (xterm.js, the tree) and Monaco are separate bundles,
// loaded only on /w/{id}: this one stays small.
import './style.css';
import { loadToken, onUnauthorized } from './api';
import { authPage } from './auth';
import { dashboardPage, rememberRecent } from './dashboard';
import { h, initTheme, toast } from './dom';
import { load, preload } from './assets';
import { navigate, startRouter } from './router';

interface WorkspaceModule { mountWorkspace(root: HTMLElement, uuid: string): () => void }

initTheme();
const root = document.getElementById('app')!;
loadToken();
onUnauthorized(() => {
    toast('Your session has ended: log in again.', 'error');
    navigate('/login?next=' + encodeURIComponent(location.pathname), true);
});

startRouter((path, params) => {
    const authed = loadToken() !== null;
    if (path === '/login' || path === '/register') {
        if (authed) { navigate(safeNext(params.get('next')), true); return; }
        authPage(root, path === '/login' ? 'login' : 'register', safeNext(params.get('next')));
        return;
    }
    if (!authed) {
        navigate('/login' + (path !== '/' ? '?next=' + encodeURIComponent(path) : ''), true);
        return;
    }
    const w = /^\/w\/([0-9a-fA-F-]{36})$/.exec(path);
    if (w && w[1] !== w[1].toLowerCase()) { navigate(path.toLowerCase(), true); return; }
    if (w) {
        rememberRecent(w[1]);
        preload('editor'); // Monaco is the largest part: fetch it beside the workspace's code
        let unmount: (() => void) | null = null;
        let gone = false;
        root.replaceChildren(h('p.boot', {}, 'Opening workspace…'));
        load<WorkspaceModule>('workspace').then((m) => {
            performance.mark('atelier:workspace-code');
            if (!gone) unmount = m.mountWorkspace(root, w[1]);
        }).catch((e) => {
            root.replaceChildren(h('p.boot.form-error', {}, `Cannot load the workspace: ${e.message}. Reload to try again.`));
        });
        return () => { gone = true; unmount?.(); };
    }
    if (path !== '/') { navigate('/', true); return; }
    return dashboardPage(root);
});

/** Only this site's paths: ?next= must not send the user elsewhere. */
function safeNext(n: string | null): string {
    return n && /^\/(?![/\\])[^\\]*$/.test(n) ? n : '/';
}
