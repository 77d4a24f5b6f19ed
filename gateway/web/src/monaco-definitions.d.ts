// monaco-editor ships no types for its language definitions' modules.
declare module 'monaco-editor/languages/definitions/*' {
    import type { languages } from 'monaco-editor/editor/editor.api.js';
    export const conf: languages.LanguageConfiguration;
    export const language: languages.IMonarchLanguage;
}
