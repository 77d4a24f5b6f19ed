#include "atelier/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { M_COUNTER, M_GAUGE, M_HISTOGRAM };

static const double g_buckets[] = {0.1, 0.25, 0.5, 1,   2.5,  5,    10,   25,
                                   50,  100,  250, 500, 1000, 2500, 5000, 10000};
#define N_BUCKETS (sizeof g_buckets / sizeof g_buckets[0])

struct at_metric {
    struct at_metric *next;
    int type;
    char *name, *help, *labels;
    double value; /* counter/gauge; histogram sum */
    unsigned long long count;
    unsigned long long buckets[N_BUCKETS];
};

static at_metric_t *g_head, *g_tail;

static at_metric_t *get(int type, const char *name, const char *help, const char *labels)
{
    if (!labels)
        labels = "";
    for (at_metric_t *m = g_head; m; m = m->next)
        if (m->type == type && !strcmp(m->name, name) && !strcmp(m->labels, labels))
            return m;
    at_metric_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help);
    m->labels = strdup(labels);
    if (!m->name || !m->help || !m->labels) {
        free(m->name);
        free(m->help);
        free(m->labels);
        free(m);
        return NULL;
    }
    /* keep a family's series together: insert after the last of its name */
    at_metric_t *after = NULL;
    for (at_metric_t *p = g_head; p; p = p->next)
        if (!strcmp(p->name, name))
            after = p;
    if (after) {
        m->next = after->next;
        after->next = m;
        if (g_tail == after)
            g_tail = m;
    } else {
        if (g_tail)
            g_tail->next = m;
        else
            g_head = m;
        g_tail = m;
    }
    return m;
}

at_metric_t *at_metrics_counter(const char *name, const char *help, const char *labels)
{
    return get(M_COUNTER, name, help, labels);
}

at_metric_t *at_metrics_gauge(const char *name, const char *help, const char *labels)
{
    return get(M_GAUGE, name, help, labels);
}

at_metric_t *at_metrics_histogram(const char *name, const char *help, const char *labels)
{
    return get(M_HISTOGRAM, name, help, labels);
}

void at_metric_add(at_metric_t *m, double v)
{
    if (m)
        m->value += v;
}

void at_metric_set(at_metric_t *m, double v)
{
    if (m)
        m->value = v;
}

void at_metric_observe(at_metric_t *m, double v)
{
    if (!m)
        return;
    m->value += v;
    m->count++;
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (v <= g_buckets[i])
            m->buckets[i]++;
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return;
        b->p = p;
        b->cap = cap;
    }
}

/* "{a,b}" from two label lists, either possibly empty; le appended last. */
static void labelset(char *out, size_t cap, const char *a, const char *b, const char *le)
{
    char tmp[1024] = "";
    size_t n = 0;
    const char *parts[3] = {a, b, le};
    for (int i = 0; i < 3; i++) {
        if (!parts[i] || !*parts[i])
            continue;
        n += (size_t)snprintf(tmp + n, sizeof tmp - n, "%s%s", n ? "," : "", parts[i]);
        if (n >= sizeof tmp)
            n = sizeof tmp - 1;
    }
    snprintf(out, cap, n ? "{%s}" : "%s", tmp);
}

char *at_metrics_render(const char *extra)
{
    sbuf_t b = {0};
    sb_printf(&b, "%s", "");
    const char *last = NULL;
    for (at_metric_t *m = g_head; m; m = m->next) {
        if (!last || strcmp(last, m->name) != 0) {
            static const char *const types[] = {"counter", "gauge", "histogram"};
            sb_printf(&b, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                      types[m->type]);
            last = m->name;
        }
        char ls[1200];
        if (m->type != M_HISTOGRAM) {
            labelset(ls, sizeof ls, m->labels, extra, NULL);
            sb_printf(&b, "%s%s %.17g\n", m->name, ls, m->value);
            continue;
        }
        for (size_t i = 0; i < N_BUCKETS; i++) {
            char le[32];
            snprintf(le, sizeof le, "le=\"%g\"", g_buckets[i]);
            labelset(ls, sizeof ls, m->labels, extra, le);
            sb_printf(&b, "%s_bucket%s %llu\n", m->name, ls, m->buckets[i]);
        }
        labelset(ls, sizeof ls, m->labels, extra, "le=\"+Inf\"");
        sb_printf(&b, "%s_bucket%s %llu\n", m->name, ls, m->count);
        labelset(ls, sizeof ls, m->labels, extra, NULL);
        sb_printf(&b, "%s_sum%s %.17g\n%s_count%s %llu\n", m->name, ls, m->value, m->name, ls,
                  m->count);
    }
    return b.p;
}

/* Merge: collect families in first-seen order; each keeps its HELP/TYPE
 * header and the sample lines of every text. */
typedef struct family {
    char *name;
    char *header;
    sbuf_t samples;
} family_t;

char *at_metrics_merge(const char *const *texts, size_t n)
{
    family_t *fams = NULL;
    size_t nf = 0, capf = 0;
    for (size_t t = 0; t < n; t++) {
        const char *p = texts[t];
        family_t *cur = NULL;
        while (p && *p) {
            const char *eol = strchr(p, '\n');
            size_t len = eol ? (size_t)(eol - p) : strlen(p);
            if (len > 6 && !strncmp(p, "# HELP ", 7)) {
                const char *nm = p + 7;
                size_t nl = strcspn(nm, " \n");
                cur = NULL;
                for (size_t i = 0; i < nf; i++)
                    if (strlen(fams[i].name) == nl && !strncmp(fams[i].name, nm, nl))
                        cur = &fams[i];
                if (!cur) {
                    if (nf == capf) {
                        capf = capf ? capf * 2 : 32;
                        family_t *g = realloc(fams, capf * sizeof *g);
                        if (!g)
                            break;
                        fams = g;
                    }
                    cur = &fams[nf++];
                    memset(cur, 0, sizeof *cur);
                    cur->name = strndup(nm, nl);
                    /* HELP line + the TYPE line that follows */
                    const char *next = eol ? eol + 1 : p + len;
                    const char *eol2 = strchr(next, '\n');
                    size_t hl = (size_t)((eol2 ? eol2 + 1 : next + strlen(next)) - p);
                    cur->header = strndup(p, hl);
                }
            } else if (len > 0 && p[0] != '#' && cur) {
                sb_printf(&cur->samples, "%.*s\n", (int)len, p);
            }
            p = eol ? eol + 1 : p + len;
        }
    }
    sbuf_t out = {0};
    sb_printf(&out, "%s", "");
    for (size_t i = 0; i < nf; i++) {
        sb_printf(&out, "%s%s", fams[i].header ? fams[i].header : "",
                  fams[i].samples.p ? fams[i].samples.p : "");
        free(fams[i].name);
        free(fams[i].header);
        free(fams[i].samples.p);
    }
    free(fams);
    return out.p;
}

void at_metrics_reset(void)
{
    while (g_head) {
        at_metric_t *m = g_head;
        g_head = m->next;
        free(m->name);
        free(m->help);
        free(m->labels);
        free(m);
    }
    g_tail = NULL;
}
