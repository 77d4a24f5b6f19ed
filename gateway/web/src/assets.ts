// The hashed asset names index.html carries (build.mjs writes them), and
// loading the lazy parts: their CSS as a <link>, their JS as a module.

interface Entry { js: string; css?: string }
let manifest: Record<string, Entry> | null = null;

export function asset(name: string): Entry {
    if (!manifest) {
        const el = document.getElementById('atelier-assets');
        manifest = JSON.parse(el?.textContent || '{}');
    }
    const e = manifest![name];
    if (!e) throw new Error(`asset ${name} is missing from index.html`);
    return e;
}

const loadedCss = new Map<string, Promise<void>>();

export function loadCss(href: string): Promise<void> {
    let p = loadedCss.get(href);
    if (!p) {
        p = new Promise((resolve, reject) => {
            const link = document.createElement('link');
            link.rel = 'stylesheet';
            link.href = href;
            link.onload = () => resolve();
            link.onerror = () => reject(new Error(`cannot load ${href}`));
            document.head.append(link);
        });
        loadedCss.set(href, p);
    }
    return p;
}

/** Load an entry point (CSS and JS in parallel); resolves with its module. */
export async function load<T>(name: string): Promise<T> {
    const e = asset(name);
    const [mod] = await Promise.all([import(/* @vite-ignore */ e.js) as Promise<T>, e.css ? loadCss(e.css) : null]);
    return mod;
}

/** Start fetching an entry point without running it. */
export function preload(name: string): void {
    const e = asset(name);
    for (const [href, as] of [[e.js, 'modulepreload'], [e.css, 'preload']] as const) {
        if (!href || document.querySelector(`link[href="${href}"]`)) continue;
        const l = document.createElement('link');
        l.rel = as;
        l.href = href;
        if (as === 'preload') l.as = 'style';
        document.head.append(l);
    }
}
