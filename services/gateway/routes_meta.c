/*
 * GET /openapi.json (the document generated from proto/openapi.yaml, read once at start)
 * and GET /docs (a self-contained HTML page that renders it: no external scripts, fonts
 * or stylesheets, so it works offline and under a strict CSP).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "nf_log.h"
#include "nf_mem.h"
#include "routes.h"

#define OPENAPI_MAX ((size_t)16 * 1024 * 1024)

static const char docs_html[] =
    "<!doctype html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>Nexa Forge API</title>\n"
    "<style>\n"
    "body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}\n"
    "header{background:#14213d;color:#fff;padding:18px 28px}\n"
    "header h1{margin:0;font-size:22px}header p{margin:4px 0 0;opacity:.8}\n"
    "main{max-width:1100px;margin:0 auto;padding:20px 28px}\n"
    "details{background:#fff;border:1px solid #d8dde3;border-radius:6px;margin:8px 0}\n"
    "summary{cursor:pointer;padding:10px 14px;display:flex;gap:12px;align-items:center}\n"
    ".m{font:600 12px monospace;color:#fff;border-radius:4px;padding:3px 8px;min-width:56px;"
    "text-align:center}\n"
    ".GET{background:#2f7dd1}.POST{background:#2a9d5c}.DELETE{background:#c8423b}"
    ".PUT{background:#b7791f}.PATCH{background:#7b52ab}\n"
    ".p{font:600 14px monospace}.s{color:#57606a}\n"
    ".body{padding:4px 16px 14px;border-top:1px solid #eef0f3}\n"
    "h3{font-size:14px;margin:14px 0 6px}\n"
    "pre{background:#0f172a;color:#e2e8f0;padding:10px 12px;border-radius:5px;overflow:auto;"
    "font-size:12.5px}\n"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #e1e4e8;"
    "padding:4px 8px;text-align:left;vertical-align:top}\n"
    ".tag{margin:22px 0 4px;font-size:17px}#err{color:#c8423b}\n"
    "</style></head><body>\n"
    "<header><h1 id=\"title\">Nexa Forge API</h1><p id=\"sub\">loading /openapi.json ...</p>"
    "</header>\n"
    "<main><p id=\"err\"></p><div id=\"ops\"></div></main>\n"
    "<script>\n"
    "'use strict';\n"
    "// Renders /openapi.json: one collapsible entry per operation, grouped by tag.\n"
    "function el(tag, cls, text) {\n"
    "  const e = document.createElement(tag);\n"
    "  if (cls) e.className = cls;\n"
    "  if (text !== undefined) e.textContent = text;\n"
    "  return e;\n"
    "}\n"
    "// Follows local $ref pointers (#/components/...), depth-limited against cycles.\n"
    "function resolve(doc, node, depth) {\n"
    "  if (depth > 8 || node === null || typeof node !== 'object') return node;\n"
    "  if (Array.isArray(node)) return node.map(n => resolve(doc, n, depth + 1));\n"
    "  if (typeof node.$ref === 'string' && node.$ref.startsWith('#/')) {\n"
    "    let t = doc;\n"
    "    for (const part of node.$ref.slice(2).split('/')) t = t ? t[part] : undefined;\n"
    "    return t === undefined ? node : resolve(doc, t, depth + 1);\n"
    "  }\n"
    "  const out = {};\n"
    "  for (const k of Object.keys(node)) out[k] = resolve(doc, node[k], depth + 1);\n"
    "  return out;\n"
    "}\n"
    "function schemaBlock(parent, title, content, doc) {\n"
    "  if (!content) return;\n"
    "  for (const type of Object.keys(content)) {\n"
    "    const media = content[type] || {};\n"
    "    if (!media.schema && !media.example) continue;\n"
    "    parent.appendChild(el('h3', null, title + ' (' + type + ')'));\n"
    "    const shown = media.schema ? resolve(doc, media.schema, 0) : media.example;\n"
    "    parent.appendChild(el('pre', null, JSON.stringify(shown, null, 2)));\n"
    "  }\n"
    "}\n"
    "function operation(doc, path, method, op) {\n"
    "  const d = el('details');\n"
    "  const s = el('summary');\n"
    "  s.appendChild(el('span', 'm ' + method.toUpperCase(), method.toUpperCase()));\n"
    "  s.appendChild(el('span', 'p', path));\n"
    "  s.appendChild(el('span', 's', op.summary || ''));\n"
    "  d.appendChild(s);\n"
    "  const b = el('div', 'body');\n"
    "  if (op.description) b.appendChild(el('p', null, op.description));\n"
    "  const params = (op.parameters || []).map(p => resolve(doc, p, 0));\n"
    "  if (params.length) {\n"
    "    b.appendChild(el('h3', null, 'Parameters'));\n"
    "    const t = el('table');\n"
    "    const h = el('tr');\n"
    "    for (const c of ['name', 'in', 'required', 'type', 'description'])\n"
    "      h.appendChild(el('th', null, c));\n"
    "    t.appendChild(h);\n"
    "    for (const p of params) {\n"
    "      const r = el('tr');\n"
    "      const type = p.schema ? (p.schema.type || '') : '';\n"
    "      for (const v of [p.name, p.in, p.required ? 'yes' : 'no', type, p.description])\n"
    "        r.appendChild(el('td', null, v === undefined ? '' : String(v)));\n"
    "      t.appendChild(r);\n"
    "    }\n"
    "    b.appendChild(t);\n"
    "  }\n"
    "  const rb = resolve(doc, op.requestBody, 0);\n"
    "  if (rb) schemaBlock(b, 'Request body', rb.content, doc);\n"
    "  const resps = op.responses || {};\n"
    "  for (const code of Object.keys(resps)) {\n"
    "    const r = resolve(doc, resps[code], 0) || {};\n"
    "    b.appendChild(el('h3', null, 'Response ' + code + (r.description ? ': ' + "
    "r.description : '')));\n"
    "    schemaBlock(b, 'Body', r.content, doc);\n"
    "  }\n"
    "  d.appendChild(b);\n"
    "  return d;\n"
    "}\n"
    "function render(doc) {\n"
    "  const info = doc.info || {};\n"
    "  document.getElementById('title').textContent = (info.title || 'API') +\n"
    "    (info.version ? ' ' + info.version : '');\n"
    "  document.getElementById('sub').textContent = info.description ||\n"
    "    'OpenAPI ' + (doc.openapi || '');\n"
    "  const groups = new Map();\n"
    "  const methods = ['get', 'post', 'put', 'patch', 'delete'];\n"
    "  for (const path of Object.keys(doc.paths || {})) {\n"
    "    const item = doc.paths[path] || {};\n"
    "    for (const m of methods) {\n"
    "      if (!item[m]) continue;\n"
    "      const tag = (item[m].tags && item[m].tags[0]) || 'other';\n"
    "      if (!groups.has(tag)) groups.set(tag, []);\n"
    "      groups.get(tag).push(operation(doc, path, m, item[m]));\n"
    "    }\n"
    "  }\n"
    "  const ops = document.getElementById('ops');\n"
    "  for (const [tag, list] of groups) {\n"
    "    ops.appendChild(el('h2', 'tag', tag));\n"
    "    for (const d of list) ops.appendChild(d);\n"
    "  }\n"
    "}\n"
    "fetch('/openapi.json').then(r => {\n"
    "  if (!r.ok) throw new Error('GET /openapi.json: HTTP ' + r.status);\n"
    "  return r.json();\n"
    "}).then(render).catch(e => {\n"
    "  document.getElementById('err').textContent = String(e);\n"
    "});\n"
    "</script></body></html>\n";

int gw_meta_load(struct gw_ctx *ctx, char *err, size_t errlen)
{
    const char *path = ctx->cfg->openapi;
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    cJSON *doc;

    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    for (;;) {
        if (cap - len < 65536) {
            cap = cap ? cap * 2 : 65536;
            buf = nf_xrealloc(buf, cap);
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0 || len > OPENAPI_MAX)
            break;
    }
    if (ferror(f) || len > OPENAPI_MAX) {
        snprintf(err, errlen, "cannot read %s (or larger than %zu bytes)", path, OPENAPI_MAX);
        goto fail;
    }
    doc = nf_json_parse(buf, len);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        snprintf(err, errlen, "%s is not a JSON object", path);
        goto fail;
    }
    cJSON_Delete(doc);
    fclose(f);
    ctx->openapi = buf;
    ctx->openapi_len = len;
    return 0;

fail:
    fclose(f);
    free(buf);
    return -1;
}

void gw_meta_openapi(struct nf_http_req *req, void *arg)
{
    struct gw_ctx *ctx = arg;

    nf_http_reply_raw(req, 200, "application/json", ctx->openapi, ctx->openapi_len);
}

void gw_meta_docs(struct nf_http_req *req, void *arg)
{
    nf_http_reply_raw(req, 200, "text/html; charset=utf-8", docs_html, sizeof(docs_html) - 1);
}
