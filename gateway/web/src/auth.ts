// /login and /register.
import { ApiError, login, register } from './api';
import { h, themeButton } from './dom';
import { navigate } from './router';

function field(label: string, attrs: Record<string, string>): [HTMLLabelElement, HTMLInputElement] {
    const input = h('input', { ...attrs, required: 'required' });
    return [h('label', {}, label, input), input];
}

export function authPage(root: HTMLElement, mode: 'login' | 'register', next: string): void {
    const isLogin = mode === 'login';
    const [emailL, email] = field('Email', { type: 'email', name: 'email', autocomplete: 'username', 'data-testid': 'email' });
    const [passL, pass] = field('Password', {
        type: 'password', name: 'password', autocomplete: isLogin ? 'current-password' : 'new-password',
        minlength: '8', maxlength: '72', 'data-testid': 'password',
    });
    const err = h('p.form-error', { role: 'alert', 'data-testid': 'form-error' });
    const submit = h('button.primary', { type: 'submit', 'data-testid': 'submit' }, isLogin ? 'Log in' : 'Create account');
    const form = h('form.auth', { novalidate: true },
        h('h1', {}, 'Atelier'),
        h('p.muted', {}, isLogin ? 'Log in to your workspaces.' : 'Create an account.'),
        emailL, passL, err, submit,
        h('p.muted', {}, isLogin ? 'No account? ' : 'Have an account? ',
            h('a', { href: isLogin ? '/register' : '/login', 'data-link': true, 'data-testid': 'switch-auth' },
                isLogin ? 'Register' : 'Log in')));
    form.addEventListener('submit', async (e) => {
        e.preventDefault();
        err.textContent = '';
        if (!email.value.includes('@')) { err.textContent = 'Enter your email address.'; email.focus(); return; }
        if (pass.value.length < 8) { err.textContent = 'The password needs at least 8 characters.'; pass.focus(); return; }
        submit.disabled = true;
        try {
            if (!isLogin) await register(email.value.trim(), pass.value);
            await login(email.value.trim(), pass.value);
            navigate(next || '/', true);
        } catch (ex) {
            err.textContent = ex instanceof ApiError ? ex.detail : String(ex);
            submit.disabled = false;
        }
    });
    root.replaceChildren(h('header.bar', {}, h('span.brand', {}, 'Atelier'), h('span.grow'), themeButton()),
        h('main.center', {}, form));
    email.focus();
}
