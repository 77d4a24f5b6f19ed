// How a session's status reads: the same words and marks on every page.

export const STATUS: Record<string, { label: string; kind: 'busy' | 'ok' | 'idle' | 'bad' }> = {
    initializing: { label: '⏳ Initializing...', kind: 'busy' },
    loading_files: { label: '⏳ Loading files...', kind: 'busy' },
    ready: { label: '✓ Ready', kind: 'ok' },
    sleeping: { label: '☾ Sleeping', kind: 'idle' },
    waking: { label: '⏳ Waking...', kind: 'busy' },
    error: { label: '⚠ Error', kind: 'bad' },
    terminating: { label: '⏳ Deleting...', kind: 'busy' },
    terminated: { label: '✕ Deleted', kind: 'idle' },
};

export function statusLabel(s: string): string {
    return STATUS[s]?.label ?? s;
}

export function statusKind(s: string): string {
    return STATUS[s]?.kind ?? 'idle';
}

export function isTransitional(s: string): boolean {
    return statusKind(s) === 'busy';
}
