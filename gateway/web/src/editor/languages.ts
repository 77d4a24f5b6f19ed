// The languages the editor highlights, registered with their tokenizers
// bundled in. (monaco-editor's own register.js files load each tokenizer
// with a lazy import(): a chunk fetched when the first file of that
// language opens, and if that fetch fails (the network blinks, the gateway
// restarts) the language stays plain text until the page reloads.)
import * as monaco from 'monaco-editor/editor/editor.api.js';
import * as cpp from 'monaco-editor/languages/definitions/cpp/cpp.js';
import * as css from 'monaco-editor/languages/definitions/css/css.js';
import * as dockerfile from 'monaco-editor/languages/definitions/dockerfile/dockerfile.js';
import * as go from 'monaco-editor/languages/definitions/go/go.js';
import * as html from 'monaco-editor/languages/definitions/html/html.js';
import * as ini from 'monaco-editor/languages/definitions/ini/ini.js';
import * as java from 'monaco-editor/languages/definitions/java/java.js';
import * as javascript from 'monaco-editor/languages/definitions/javascript/javascript.js';
import * as markdown from 'monaco-editor/languages/definitions/markdown/markdown.js';
import * as python from 'monaco-editor/languages/definitions/python/python.js';
import * as rust from 'monaco-editor/languages/definitions/rust/rust.js';
import * as shell from 'monaco-editor/languages/definitions/shell/shell.js';
import * as sql from 'monaco-editor/languages/definitions/sql/sql.js';
import * as typescript from 'monaco-editor/languages/definitions/typescript/typescript.js';
import * as xml from 'monaco-editor/languages/definitions/xml/xml.js';
import * as yaml from 'monaco-editor/languages/definitions/yaml/yaml.js';

interface Definition {
    conf: monaco.languages.LanguageConfiguration;
    language: monaco.languages.IMonarchLanguage;
}

const LANGUAGES: [monaco.languages.ILanguageExtensionPoint, Definition][] = [
    [{ id: 'python', extensions: ['.py', '.pyw', '.pyi', '.gyp'], aliases: ['Python', 'py'],
        firstLine: '^#!/.*\\bpython[0-9.-]*\\b' }, python],
    [{ id: 'shell', extensions: ['.sh', '.bash', '.bashrc', '.profile'], filenames: ['.bashrc', '.bash_profile', '.profile'],
        aliases: ['Shell', 'sh'], firstLine: '^#!.*\\b(ba)?sh\\b' }, shell],
    [{ id: 'markdown', extensions: ['.md', '.markdown'], aliases: ['Markdown'] }, markdown],
    [{ id: 'javascript', extensions: ['.js', '.jsx', '.mjs', '.cjs'], aliases: ['JavaScript', 'js'], firstLine: '^#!.*\\bnode' }, javascript],
    [{ id: 'typescript', extensions: ['.ts', '.tsx', '.cts', '.mts'], aliases: ['TypeScript', 'ts'] }, typescript],
    [{ id: 'json', extensions: ['.json', '.jsonc', '.ipynb'], aliases: ['JSON'] }, javascript],
    [{ id: 'html', extensions: ['.html', '.htm'], aliases: ['HTML'] }, html],
    [{ id: 'css', extensions: ['.css'], aliases: ['CSS'] }, css],
    [{ id: 'yaml', extensions: ['.yaml', '.yml'], aliases: ['YAML'] }, yaml],
    [{ id: 'ini', extensions: ['.ini', '.cfg', '.toml', '.properties', '.gitconfig'], filenames: ['.editorconfig', '.gitattributes'],
        aliases: ['Ini'] }, ini],
    [{ id: 'sql', extensions: ['.sql'], aliases: ['SQL'] }, sql],
    [{ id: 'dockerfile', extensions: ['.dockerfile'], filenames: ['Dockerfile'], aliases: ['Dockerfile'] }, dockerfile],
    [{ id: 'c', extensions: ['.c', '.h'], aliases: ['C'] }, cpp],
    [{ id: 'cpp', extensions: ['.cpp', '.cc', '.cxx', '.hpp', '.hh'], aliases: ['C++'] }, cpp],
    [{ id: 'go', extensions: ['.go'], aliases: ['Go'] }, go],
    [{ id: 'rust', extensions: ['.rs'], aliases: ['Rust'] }, rust],
    [{ id: 'java', extensions: ['.java'], aliases: ['Java'] }, java],
    [{ id: 'xml', extensions: ['.xml', '.xsd', '.svg', '.xsl'], aliases: ['XML'] }, xml],
];

for (const [point, def] of LANGUAGES) {
    monaco.languages.register(point);
    monaco.languages.setMonarchTokensProvider(point.id, def.language);
    monaco.languages.setLanguageConfiguration(point.id, def.conf);
}
