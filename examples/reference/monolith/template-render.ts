/**
 * A small, logic-less template language for invoice documents (a Mustache subset):
 * `{{name}}` inserts a value HTML-escaped, `{{#items}}...{{/items}}` repeats a block per line
 * item (inside it, names resolve against the item first). Unknown names render empty.
 */

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

export function escapeHtml(value: unknown): string {
  if (value === null || value === undefined) return '';
  return String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

type Scope = Record<string, unknown>;

function lookup(scopes: Scope[], name: string): unknown {
  for (const scope of scopes) {
    let value: unknown = scope;
    let found = true;
    for (const part of name.split('.')) {
      if (value !== null && typeof value === 'object' && Object.hasOwn(value, part)) value = (value as Scope)[part];
      else {
        found = false;
        break;
      }
    }
    if (found) return value;
  }
  return undefined;
}

const SECTION = /\{\{#\s*([\w.]+)\s*\}\}([\s\S]*?)\{\{\/\s*\1\s*\}\}/g;
const VARIABLE = /\{\{\s*([\w.]+)\s*\}\}/g;

function renderWith(template: string, scopes: Scope[]): string {
  const expanded = template.replace(SECTION, (_m, name: string, block: string) => {
    const value = lookup(scopes, name);
    if (Array.isArray(value)) return value.map((item) => renderWith(block, [item as Scope, ...scopes])).join('');
    return value ? renderWith(block, scopes) : '';
  });
  return expanded.replace(VARIABLE, (_m, name: string) => escapeHtml(lookup(scopes, name)));
}

export function renderTemplate(template: string, data: Scope): string {
  return renderWith(template, [data]);
}

/** Section names that are opened and never closed (a typo the author should hear about). */
export function unclosedSections(template: string): string[] {
  const opened = [...template.matchAll(/\{\{#\s*([\w.]+)\s*\}\}/g)].map((m) => m[1]);
  return opened.filter((name) => !new RegExp(`\\{\\{/\\s*${name.replace(/\./g, '\\.')}\\s*\\}\\}`).test(template));
}
