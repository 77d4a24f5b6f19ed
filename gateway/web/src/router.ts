// Client-side routes: /, /login, /register, /w/{session uuid}. The gateway
// answers index.html for each, so a reload or a shared link lands here.

type Handler = (path: string, params: URLSearchParams) => void | (() => void);
let handler: Handler = () => {};
let cleanup: (() => void) | void;

export function startRouter(h: Handler): void {
    handler = h;
    window.addEventListener('popstate', () => run());
    document.addEventListener('click', (e) => {
        const a = (e.target as Element).closest?.('a[data-link]') as HTMLAnchorElement | null;
        if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey) return;
        e.preventDefault();
        navigate(a.getAttribute('href') || '/');
    });
    run();
}

export function navigate(to: string, replace = false): void {
    if (replace) history.replaceState(null, '', to);
    else history.pushState(null, '', to);
    run();
}

function run(): void {
    if (cleanup) cleanup();
    cleanup = handler(location.pathname, new URLSearchParams(location.search));
}
