// Monaco, as the IDE uses it: one bundle, loaded when a workspace opens.
// The editor core with its usual contributions (find, folding, bracket
// matching, multi-cursor, comments, suggestions...), the tokenizers of the
// languages people keep in a workspace, and Vim keys on demand.
import * as monaco from 'monaco-editor/editor/editor.api.js';
import './features';
import './languages';
import { initVimMode } from 'monaco-vim';

export { monaco };

export function setupEnvironment(workerUrl: string): void {
    (globalThis as { MonacoEnvironment?: unknown }).MonacoEnvironment = {
        getWorker: () => new Worker(workerUrl, { name: 'monaco-editor' }),
    };
}

export function createEditor(el: HTMLElement, dark: boolean): monaco.editor.IStandaloneCodeEditor {
    return monaco.editor.create(el, {
        model: null,
        theme: dark ? 'vs-dark' : 'vs',
        automaticLayout: true,
        fontSize: 14,
        minimap: { enabled: false },
        scrollBeyondLastLine: false,
        bracketPairColorization: { enabled: true },
        matchBrackets: 'always',
        folding: true,
        showFoldingControls: 'mouseover',
        renderWhitespace: 'selection',
        tabSize: 4,
        insertSpaces: true,
        fixedOverflowWidgets: true,
    });
}

export function setDark(dark: boolean): void {
    monaco.editor.setTheme(dark ? 'vs-dark' : 'vs');
}

/** Vim keys on this editor, with its mode line in statusEl; returns the off switch. */
export function vim(editor: monaco.editor.IStandaloneCodeEditor, statusEl: HTMLElement): () => void {
    const mode = initVimMode(editor, statusEl);
    return () => mode.dispose();
}

export function modelFor(path: string, content: string): monaco.editor.ITextModel {
    const uri = monaco.Uri.from({ scheme: 'file', path: '/' + path });
    monaco.editor.getModel(uri)?.dispose();
    return monaco.editor.createModel(content, undefined, uri);
}

export const saveKey = monaco.KeyMod.CtrlCmd | monaco.KeyCode.KeyS;
