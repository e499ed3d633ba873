/* SPDX-License-Identifier: MIT */
/*
 * subject: the registry of NATS subject patterns, subject building with the
 * token rule, publish-subject matching and subscription-pattern checks.
 *
 * Data. A pattern lives in one `pentry` allocation (its name, template and
 * parsed tokens) that is created once and never moves or changes until the
 * registry is destroyed, so pointers handed out in mb_subject_info stay valid.
 * Everything a lookup reads is an immutable `snapshot`: the array of entry
 * pointers in registration order, an open-addressing hash of names, and a
 * token trie compiled from all templates. A trie node has its literal
 * children in a contiguous edge range sorted by (length, bytes) and searched
 * by binary search, at most one placeholder child, and the index of the
 * pattern that ends there (if any). Two patterns of the same shape are
 * refused, so a node never ends more than one pattern.
 *
 * Matching walks the trie token by token, literal child first and the
 * placeholder child on failure. Every trie node sits at exactly one depth and
 * is reached by one path, so the walk visits each node at most once: the cost
 * is bounded by the size of the trie and the subject's tokens, never by the
 * subjects seen before (a check allocates nothing). Each thread remembers the
 * last subject it checked or built and its pattern (the memo, one entry), so
 * checking the subject just built, or the same subject again, is one
 * comparison; the byte rules are checked 16 bytes at a time.
 * When patterns overlap, the most specific one wins: at the first token where
 * two matching patterns differ, the one with a literal there is chosen.
 *
 * Threads. Lookups (build, check, lookup, count, at) load the current snapshot
 * with acquire ordering and take no lock. mb_subject_register serialises on a
 * mutex, builds a complete new snapshot and publishes it with a release store;
 * the previous snapshot is chained behind it and freed only by
 * mb_subject_registry_destroy, because a reader may still be walking it.
 * Registrations are rare and bounded by MB_SUBJECT_MAX_PATTERNS, so the chain
 * is bounded too. Metrics are relaxed atomics.
 */
#include "mudbus/subject.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "bytes.h"
#include "metrics_int.h"
#include "mudbus/clock.h"

/* A subject of 255 bytes has at most 128 non-empty tokens. */
#define MAX_TOKENS     ((MB_SUBJECT_MAX + 1) / 2)
#define PARAM_NAME_MAX 32
#define NO_NODE        UINT32_MAX
/* Room for an escaped, truncated excerpt of untrusted bytes in a message. */
#define SHOW_BUF 72
#define CHARSET  "[A-Za-z0-9_-]"

/* One token of a template: a literal, or a placeholder whose name is `text`
 * (without braces). `ph` numbers the placeholders from 0 in template order. */
typedef struct ptok {
    const char *text;
    uint32_t len;
    uint8_t is_param;
    uint8_t ph;
} ptok;

typedef struct pentry {
    const char *name;
    const char *pattern;
    uint32_t name_len;
    uint32_t hash;  /* of the name */
    uint32_t index; /* registration order */
    uint32_t ntok;
    uint32_t nph;     /* placeholders */
    uint32_t lit_len; /* bytes of the literals plus the dots */
    mb_schema_kind schema;
    ptok toks[]; /* ntok tokens, then the name and template strings */
} pentry;

typedef struct tnode {
    uint32_t edge_off; /* first literal edge in snapshot.edges */
    uint32_t nedge;
    uint32_t param;   /* placeholder child, or NO_NODE */
    int32_t terminal; /* pattern index ending here, or -1 */
} tnode;

typedef struct tedge {
    const char *text; /* literal bytes, owned by a pentry */
    uint32_t len;
    uint32_t child;
} tedge;

typedef struct snapshot {
    struct snapshot *prev; /* retired predecessor, freed at destroy */
    uint64_t id;           /* unique in the process (the memo's key) */
    uint32_t n;
    uint32_t hmask;
    pentry **entries; /* n entries in registration order */
    uint32_t *htab;   /* entry index + 1, 0 when empty */
    tnode *nodes;     /* nodes[0] is the root */
    tedge *edges;
} snapshot;

struct mb_subject_registry {
    _Atomic(snapshot *) snap;
    pthread_mutex_t lock; /* serialises registrations */
    mb_metrics *metrics;
    int own_metrics;
    mb_counter *builds;
    mb_counter *checks;
    mb_counter *sub_checks;
    mb_counter *failures[MB__SUBJECT_REASON_COUNT];
    mb_histogram *build_ns;
    mb_histogram *check_ns;
};

/* The contract's patterns (PROTOCOL.md section 1), in table order. */
static const struct {
    const char *name;
    const char *pattern;
    mb_schema_kind schema;
} builtin[] = {
    {"chat_say_room", "chat.say.room.{room_id}", MB_SCHEMA_CHAT},
    {"chat_local_subzone", "chat.local.subzone.{subzone}", MB_SCHEMA_CHAT},
    {"chat_global", "chat.global", MB_SCHEMA_CHAT},
    {"chat_whisper_player", "chat.whisper.player.{target_id}", MB_SCHEMA_CHAT},
    {"chat_system", "chat.system", MB_SCHEMA_CHAT},
    {"chat_emote_room", "chat.emote.room.{room_id}", MB_SCHEMA_CHAT},
    {"chat_pose_room", "chat.pose.room.{room_id}", MB_SCHEMA_CHAT},
    {"chat_party_group", "chat.party.group.{party_id}", MB_SCHEMA_CHAT},
    {"event_player_entered", "events.player_entered.{room_id}", MB_SCHEMA_EVENT},
    {"event_player_left", "events.player_left.{room_id}", MB_SCHEMA_EVENT},
    {"event_game_tick", "events.game_tick", MB_SCHEMA_EVENT},
    {"event_player_mortally_wounded", "events.player_mortally_wounded.{room_id}", MB_SCHEMA_EVENT},
    {"event_player_dp_decay", "events.player_dp_decay.{room_id}", MB_SCHEMA_EVENT},
    {"event_player_died", "events.player_died.{room_id}", MB_SCHEMA_EVENT},
    {"event_player_respawned", "events.player_respawned.{room_id}", MB_SCHEMA_EVENT},
    {"event_domain", "events.domain.{event_type}", MB_SCHEMA_EVENT},
    {"combat_attack", "combat.attack.{room_id}", MB_SCHEMA_EVENT},
    {"combat_npc_attacked", "combat.npc_attacked.{room_id}", MB_SCHEMA_EVENT},
    {"combat_started", "combat.started.{room_id}", MB_SCHEMA_EVENT},
    {"combat_ended", "combat.ended.{room_id}", MB_SCHEMA_EVENT},
    {"combat_npc_died", "combat.npc_died.{room_id}", MB_SCHEMA_EVENT},
    {"combat_damage", "combat.damage.{room_id}", MB_SCHEMA_EVENT},
    {"combat_dp_update", "combat.dp_update.{player_id}", MB_SCHEMA_EVENT},
    {"combat_player_died", "combat.player_died.{room_id}", MB_SCHEMA_EVENT},
    {"combat_player_mortally_wounded", "combat.player_mortally_wounded.{room_id}", MB_SCHEMA_EVENT},
    {"combat_target_switch", "combat.target_switch.{room_id}", MB_SCHEMA_EVENT},
    {"combat_dp_decay", "combat.dp_decay.{player_id}", MB_SCHEMA_EVENT},
    {"mutes_changed", "mutes.changed.{player_id}", MB_SCHEMA_EVENT},
};
#define NBUILTIN (sizeof builtin / sizeof builtin[0])

#define X(id, str) str,
static const char *const reason_names[] = {"ok", MB_SUBJECT_REASON_MAP(X)};
#undef X

const char *mb_subject_reason_name(mb_subject_reason r)
{
    if ((unsigned)r >= (unsigned)MB__SUBJECT_REASON_COUNT)
        return "unknown";
    return reason_names[r];
}

/* ---- small helpers ---- */

/* Set bit i % 64 of dots[i / 64] for each '.' among the len (at most 256)
 * bytes at s. False if some byte is neither a dot nor of the token charset
 * (dots is then incomplete). */
static bool dot_map(const char *s, size_t len, uint64_t dots[4])
{
    dots[0] = dots[1] = dots[2] = dots[3] = 0;
    size_t i = 0;
#if defined(__SSE2__)
    const __m128i dot = _mm_set1_epi8('.');
    for (; i + 16 <= len; i += 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m128i d = _mm_cmpeq_epi8(x, dot);
        if (_mm_movemask_epi8(_mm_or_si128(d, mb__bytes_token_mask(x))) != 0xFFFF)
            return false;
        dots[i / 64] |= (uint64_t)(unsigned)_mm_movemask_epi8(d) << (i % 64);
    }
    if (i < len && len >= 16) {
        /* The last 16 bytes, overlapping what was done: shift that out. i is
         * a multiple of 16, so the rest stays within one word of dots. */
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(s + len - 16));
        __m128i d = _mm_cmpeq_epi8(x, dot);
        if (_mm_movemask_epi8(_mm_or_si128(d, mb__bytes_token_mask(x))) != 0xFFFF)
            return false;
        unsigned m = (unsigned)_mm_movemask_epi8(d) >> (i - (len - 16));
        dots[i / 64] |= (uint64_t)m << (i % 64);
        return true;
    }
#endif
    for (; i < len; i++) {
        if (s[i] == '.')
            dots[i / 64] |= UINT64_C(1) << (i % 64);
        else if (!mb__bytes_is_token((unsigned char)s[i]))
            return false;
    }
    return true;
}

/* The hash of pattern names (a lookup by name on every build). */
static uint32_t hash_name(const char *s, size_t len)
{
    return mb__bytes_hash(s, len);
}

/* Write an excerpt of untrusted bytes that is safe to print: printable ASCII
 * as is (quote and backslash escaped), other bytes as \xNN, cut with "..."
 * when longer than the buffer. Returns out. */
static const char *show(char out[SHOW_BUF], const void *p, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = p;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        char tmp[4];
        size_t n;
        if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
            tmp[0] = (char)c;
            n = 1;
        } else if (c == '\\' || c == '\'') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            n = 2;
        } else {
            tmp[0] = '\\';
            tmp[1] = 'x';
            tmp[2] = hex[c >> 4];
            tmp[3] = hex[c & 15];
            n = 4;
        }
        if (o + n > SHOW_BUF - 4) {
            memcpy(out + o, "...", 4);
            return out;
        }
        memcpy(out + o, tmp, n);
        o += n;
    }
    out[o] = '\0';
    return out;
}

static const char *show_str(char out[SHOW_BUF], const char *s)
{
    return show(out, s, strnlen(s, SHOW_BUF));
}

static inline snapshot *snap_load(const mb_subject_registry *r)
{
    return atomic_load_explicit(&r->snap, memory_order_acquire);
}

/* ---- patterns ---- */

static int valid_name(const char *name, size_t *len)
{
    size_t n = strnlen(name, MB_SUBJECT_NAME_MAX + 1);
    if (n == 0 || n > MB_SUBJECT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    *len = n;
    return 1;
}

static int valid_param_name(const char *s, size_t n)
{
    if (n == 0 || n > PARAM_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = (c >= 'a' && c <= 'z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

/* Parse a template into toks (pointing into `pattern`). MB_EPATTERN names the
 * token and the rule. */
static mb_status parse_pattern(const char *pattern, ptok *toks, uint32_t *ntok, uint32_t *nph,
                               uint32_t *lit_len, mb_err *err)
{
    char q[SHOW_BUF], t[SHOW_BUF];
    size_t len = strnlen(pattern, MB_SUBJECT_MAX + 1);
    if (len == 0)
        return mb_err_set(err, MB_EPATTERN, "subject pattern is empty");
    if (len > MB_SUBJECT_MAX)
        return mb_err_set(err, MB_EPATTERN, "subject pattern '%s' exceeds %d bytes",
                          show(q, pattern, len), MB_SUBJECT_MAX);
    show(q, pattern, len);
    uint32_t n = 0, np = 0, lit = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && pattern[i] != '.')
            continue;
        const char *s = pattern + start;
        size_t tl = i - start;
        unsigned num = n + 1;
        if (tl == 0)
            return mb_err_set(err, MB_EPATTERN, "subject pattern '%s': token %u is empty", q, num);
        show(t, s, tl);
        if (s[0] == '{') {
            if (tl < 2 || s[tl - 1] != '}')
                return mb_err_set(err, MB_EPATTERN,
                                  "subject pattern '%s': token %u '%s' is an unterminated "
                                  "placeholder",
                                  q, num, t);
            const char *pn = s + 1;
            size_t pl = tl - 2;
            if (!valid_param_name(pn, pl))
                return mb_err_set(err, MB_EPATTERN,
                                  "subject pattern '%s': token %u '%s': placeholder name must "
                                  "be 1..%d bytes of [a-z_][a-z0-9_]*",
                                  q, num, t, PARAM_NAME_MAX);
            for (uint32_t k = 0; k < n; k++) {
                if (toks[k].is_param && toks[k].len == pl && memcmp(toks[k].text, pn, pl) == 0)
                    return mb_err_set(err, MB_EPATTERN,
                                      "subject pattern '%s': token %u: placeholder %s appears "
                                      "twice",
                                      q, num, t);
            }
            toks[n] = (ptok){pn, (uint32_t)pl, 1, (uint8_t)np};
            np++;
        } else {
            for (size_t k = 0; k < tl; k++) {
                char c[SHOW_BUF];
                if (mb__bytes_is_token((unsigned char)s[k]))
                    continue;
                if (s[k] == '{' || s[k] == '}')
                    return mb_err_set(err, MB_EPATTERN,
                                      "subject pattern '%s': token %u '%s': a placeholder must "
                                      "be a whole token",
                                      q, num, t);
                return mb_err_set(err, MB_EPATTERN,
                                  "subject pattern '%s': token %u '%s': character '%s' at "
                                  "byte %zu outside " CHARSET,
                                  q, num, t, show(c, s + k, 1), k);
            }
            if (tl > MB_SUBJECT_TOKEN_MAX)
                return mb_err_set(err, MB_EPATTERN,
                                  "subject pattern '%s': token %u: literal of %zu bytes exceeds "
                                  "%d",
                                  q, num, tl, MB_SUBJECT_TOKEN_MAX);
            toks[n] = (ptok){s, (uint32_t)tl, 0, 0};
            lit += (uint32_t)tl;
        }
        n++;
        start = i + 1;
    }
    lit += n - 1; /* the dots */
    /* Each placeholder yields at least one byte. The template limit already
     * implies this, since "{x}" is longer than its shortest value. */
    if (lit + np > MB_SUBJECT_MAX)
        return mb_err_set(err, MB_EPATTERN,
                          "subject pattern '%s': shortest subject of %u bytes exceeds %d", q,
                          (unsigned)(lit + np), MB_SUBJECT_MAX);
    *ntok = n;
    *nph = np;
    *lit_len = lit;
    return MB_OK;
}

/* Copy a parsed pattern into one allocation. NULL when out of memory. */
static pentry *entry_new(const char *name, size_t name_len, const char *pattern, const ptok *toks,
                         uint32_t ntok, uint32_t nph, uint32_t lit_len, mb_schema_kind schema)
{
    size_t plen = strlen(pattern);
    pentry *e = mb__malloc(sizeof *e + ntok * sizeof(ptok) + name_len + 1 + plen + 1);
    if (e == NULL)
        return NULL;
    char *nm = (char *)(e->toks + ntok);
    char *pt = nm + name_len + 1;
    memcpy(nm, name, name_len);
    nm[name_len] = '\0';
    memcpy(pt, pattern, plen + 1);
    e->name = nm;
    e->pattern = pt;
    e->name_len = (uint32_t)name_len;
    e->hash = hash_name(name, name_len);
    e->index = 0;
    e->ntok = ntok;
    e->nph = nph;
    e->lit_len = lit_len;
    e->schema = schema;
    for (uint32_t i = 0; i < ntok; i++) {
        e->toks[i] = toks[i];
        e->toks[i].text = pt + (toks[i].text - pattern);
    }
    return e;
}

/* Literals before placeholders; literals by length, then bytes (the order of
 * the trie's edges); placeholders are all alike. */
static int tok_cmp(const ptok *a, const ptok *b)
{
    if (a->is_param != b->is_param)
        return a->is_param ? 1 : -1;
    if (a->is_param)
        return 0;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return memcmp(a->text, b->text, a->len);
}

/* Token sequences in lexicographic order, a prefix before its extensions. */
static int seq_cmp(const void *pa, const void *pb)
{
    const pentry *a = *(pentry *const *)pa;
    const pentry *b = *(pentry *const *)pb;
    uint32_t n = a->ntok < b->ntok ? a->ntok : b->ntok;
    for (uint32_t i = 0; i < n; i++) {
        int c = tok_cmp(&a->toks[i], &b->toks[i]);
        if (c != 0)
            return c;
    }
    return (a->ntok > b->ntok) - (a->ntok < b->ntok);
}

static int same_shape(const pentry *a, const pentry *b)
{
    return a->ntok == b->ntok && seq_cmp(&a, &b) == 0;
}

/* ---- snapshots and the trie ---- */

typedef struct tbuild {
    pentry **sorted;
    tnode *nodes;
    tedge *edges;
    uint32_t nn, ne;
} tbuild;

/* Build the subtree of sorted[lo, hi), which share their first d tokens;
 * returns its root. Literal groups are contiguous in sorted order, followed by
 * the placeholder group, so each node's edges come out sorted. */
static uint32_t build_node(tbuild *b, uint32_t lo, uint32_t hi, uint32_t d)
{
    uint32_t id = b->nn++;
    b->nodes[id] = (tnode){0, 0, NO_NODE, -1};
    uint32_t i = lo;
    /* Shapes are unique, so at most one pattern ends here; it sorts first. */
    if (i < hi && b->sorted[i]->ntok == d)
        b->nodes[id].terminal = (int32_t)b->sorted[i++]->index;
    uint32_t ngroups = 0, j = i;
    while (j < hi && !b->sorted[j]->toks[d].is_param) {
        uint32_t k = j + 1;
        while (k < hi && tok_cmp(&b->sorted[k]->toks[d], &b->sorted[j]->toks[d]) == 0)
            k++;
        ngroups++;
        j = k;
    }
    uint32_t off = b->ne;
    b->ne += ngroups;
    b->nodes[id].edge_off = off;
    b->nodes[id].nedge = ngroups;
    for (uint32_t g = 0; i < hi && !b->sorted[i]->toks[d].is_param; g++) {
        uint32_t k = i + 1;
        while (k < hi && tok_cmp(&b->sorted[k]->toks[d], &b->sorted[i]->toks[d]) == 0)
            k++;
        const ptok *t = &b->sorted[i]->toks[d];
        uint32_t child = build_node(b, i, k, d + 1);
        b->edges[off + g] = (tedge){t->text, t->len, child};
        i = k;
    }
    if (i < hi) {
        uint32_t child = build_node(b, i, hi, d + 1);
        b->nodes[id].param = child;
    }
    return id;
}

static void snapshot_free(snapshot *s)
{
    if (s == NULL)
        return;
    mb__free(s->entries);
    mb__free(s->htab);
    mb__free(s->nodes);
    mb__free(s->edges);
    mb__free(s);
}

/* A new snapshot of list[0..n) plus `extra` (may be NULL), whose index must
 * be n. Entries are borrowed. NULL when out of memory. */
static _Atomic uint64_t snapshot_ids;

static snapshot *snapshot_build(pentry *const *list, uint32_t n, pentry *extra)
{
    uint32_t total = n + (extra != NULL);
    uint32_t hsize = 64;
    while (hsize < 2 * total)
        hsize *= 2;
    size_t ntoks = 0;
    for (uint32_t i = 0; i < n; i++)
        ntoks += list[i]->ntok;
    if (extra != NULL)
        ntoks += extra->ntok;

    snapshot *s = mb__calloc(1, sizeof *s);
    pentry **sorted = mb__malloc((total ? total : 1) * sizeof *sorted);
    if (s == NULL || sorted == NULL)
        goto fail;
    s->id = atomic_fetch_add_explicit(&snapshot_ids, 1, memory_order_relaxed) + 1;
    s->n = total;
    s->hmask = hsize - 1;
    s->entries = mb__malloc((total ? total : 1) * sizeof *s->entries);
    s->htab = mb__calloc(hsize, sizeof *s->htab);
    s->nodes = mb__malloc((ntoks + 1) * sizeof *s->nodes);
    s->edges = mb__malloc((ntoks ? ntoks : 1) * sizeof *s->edges);
    if (s->entries == NULL || s->htab == NULL || s->nodes == NULL || s->edges == NULL)
        goto fail;
    if (n > 0)
        memcpy(s->entries, list, n * sizeof *list);
    if (extra != NULL)
        s->entries[n] = extra;
    for (uint32_t i = 0; i < total; i++) {
        uint32_t h = s->entries[i]->hash & s->hmask;
        while (s->htab[h] != 0)
            h = (h + 1) & s->hmask;
        s->htab[h] = i + 1;
    }
    memcpy(sorted, s->entries, total * sizeof *sorted);
    qsort(sorted, total, sizeof *sorted, seq_cmp);
    tbuild b = {sorted, s->nodes, s->edges, 0, 0};
    build_node(&b, 0, total, 0);
    mb__free(sorted);
    /* The bounds above count one node and one edge per token; shared
     * prefixes need fewer. Shrinking cannot move data we still point into. */
    tnode *nodes = mb__realloc(s->nodes, b.nn * sizeof *nodes);
    if (nodes != NULL)
        s->nodes = nodes;
    if (b.ne > 0) {
        tedge *edges = mb__realloc(s->edges, b.ne * sizeof *edges);
        if (edges != NULL)
            s->edges = edges;
    }
    return s;
fail:
    mb__free(sorted);
    snapshot_free(s);
    return NULL;
}

static const pentry *find_name(const snapshot *s, const char *name, size_t len, uint32_t h)
{
    for (uint32_t i = h & s->hmask;; i = (i + 1) & s->hmask) {
        uint32_t v = s->htab[i];
        if (v == 0)
            return NULL;
        const pentry *e = s->entries[v - 1];
        if (e->hash == h && e->name_len == len && mb__bytes_equal(e->name, name, len))
            return e;
    }
}

static void fill_info(const pentry *e, mb_subject_info *out)
{
    if (out == NULL)
        return;
    out->name = e->name;
    out->pattern = e->pattern;
    out->schema = e->schema;
}

/* ---- registry ---- */

static mb_status register_metrics(mb_subject_registry *r, mb_err *err)
{
    mb_metrics *m = r->metrics;
    mb_status st =
        mb_metrics_counter(m, "mudbus_subject_builds_total",
                           "Subjects built from a pattern and parameters.", NULL, &r->builds, err);
    if (st == MB_OK)
        st = mb_metrics_counter(m, "mudbus_subject_checks_total",
                                "Publish subjects checked against the patterns.", NULL, &r->checks,
                                err);
    if (st == MB_OK)
        st = mb_metrics_counter(m, "mudbus_subject_sub_checks_total",
                                "Subscription patterns checked against the breadth rules.", NULL,
                                &r->sub_checks, err);
    for (int i = 1; i < MB__SUBJECT_REASON_COUNT && st == MB_OK; i++) {
        char labels[64];
        size_t n = strlen(reason_names[i]);
        memcpy(labels, "reason=\"", 8);
        memcpy(labels + 8, reason_names[i], n);
        memcpy(labels + 8 + n, "\"", 2);
        st = mb_metrics_counter(m, "mudbus_subject_failures_total",
                                "Subjects, parameters and subscription patterns refused, by "
                                "reason.",
                                labels, &r->failures[i], err);
    }
    if (st == MB_OK)
        st = mb_metrics_histogram(m, "mudbus_subject_build_seconds", "Time to build a subject.",
                                  NULL, 1e-9, &r->build_ns, err);
    if (st == MB_OK)
        st =
            mb_metrics_histogram(m, "mudbus_subject_check_seconds",
                                 "Time to check a publish subject.", NULL, 1e-9, &r->check_ns, err);
    return st;
}

mb_status mb_subject_registry_create(mb_metrics *metrics, mb_subject_registry **out, mb_err *err)
{
    if (out == NULL)
        return mb_err_set(err, MB_EINVAL, "subject registry: NULL out");
    mb_subject_registry *r = mb__calloc(1, sizeof *r);
    if (r == NULL)
        return mb_err_set(err, MB_ENOMEM, "subject registry: out of memory");
    pthread_mutex_init(&r->lock, NULL);
    mb_status st = MB_OK;
    pentry *pre[NBUILTIN] = {0};
    snapshot *s = NULL;
    if (metrics == NULL) {
        st = mb_metrics_create(&metrics, err);
        r->own_metrics = st == MB_OK;
    }
    r->metrics = metrics;
    if (st == MB_OK)
        st = register_metrics(r, err);
    for (size_t i = 0; i < NBUILTIN && st == MB_OK; i++) {
        ptok toks[MAX_TOKENS];
        uint32_t ntok, nph, lit;
        st = parse_pattern(builtin[i].pattern, toks, &ntok, &nph, &lit, NULL);
        if (st != MB_OK) {
            st = mb_err_set(err, MB_EINTERNAL, "subject registry: built-in pattern %s refused",
                            builtin[i].name);
            break;
        }
        pre[i] = entry_new(builtin[i].name, strlen(builtin[i].name), builtin[i].pattern, toks, ntok,
                           nph, lit, builtin[i].schema);
        if (pre[i] == NULL)
            st = mb_err_set(err, MB_ENOMEM, "subject registry: out of memory");
        else
            pre[i]->index = (uint32_t)i;
    }
    if (st == MB_OK && (s = snapshot_build(pre, NBUILTIN, NULL)) == NULL)
        st = mb_err_set(err, MB_ENOMEM, "subject registry: out of memory");
    if (st != MB_OK) {
        /* Take back the metrics registered in a caller's registry, so that
         * it is as it was and the call can be retried. */
        for (size_t i = 0; i < NBUILTIN; i++)
            mb__free(pre[i]);
        if (r->own_metrics) {
            mb_metrics_destroy(r->metrics);
        } else {
            mb__metrics_forget(r->metrics, r->builds);
            mb__metrics_forget(r->metrics, r->checks);
            mb__metrics_forget(r->metrics, r->sub_checks);
            for (int i = 0; i < MB__SUBJECT_REASON_COUNT; i++)
                mb__metrics_forget(r->metrics, r->failures[i]);
            mb__metrics_forget(r->metrics, r->build_ns);
            mb__metrics_forget(r->metrics, r->check_ns);
        }
        pthread_mutex_destroy(&r->lock);
        mb__free(r);
        return st;
    }
    atomic_init(&r->snap, s);
    *out = r;
    return MB_OK;
}

void mb_subject_registry_destroy(mb_subject_registry *r)
{
    if (r == NULL)
        return;
    snapshot *s = atomic_load_explicit(&r->snap, memory_order_acquire);
    /* The newest snapshot lists every entry ever registered. */
    for (uint32_t i = 0; i < s->n; i++)
        mb__free(s->entries[i]);
    while (s != NULL) {
        snapshot *prev = s->prev;
        snapshot_free(s);
        s = prev;
    }
    if (r->own_metrics)
        mb_metrics_destroy(r->metrics);
    pthread_mutex_destroy(&r->lock);
    mb__free(r);
}

mb_metrics *mb_subject_registry_metrics(const mb_subject_registry *r)
{
    return r != NULL ? r->metrics : NULL;
}

mb_status mb_subject_register(mb_subject_registry *r, const char *name, const char *pattern,
                              mb_schema_kind schema, mb_err *err)
{
    char q[SHOW_BUF], t[SHOW_BUF];
    if (r == NULL || name == NULL || pattern == NULL)
        return mb_err_set(err, MB_EINVAL, "subject register: NULL argument");
    size_t name_len;
    if (!valid_name(name, &name_len))
        return mb_err_set(err, MB_EINVAL,
                          "subject pattern name '%s' must be 1..%d bytes of [a-z0-9_]",
                          show_str(q, name), MB_SUBJECT_NAME_MAX);
    if (schema != MB_SCHEMA_CHAT && schema != MB_SCHEMA_EVENT)
        return mb_err_set(err, MB_EINVAL, "subject pattern %s: schema must be chat or event", name);
    ptok toks[MAX_TOKENS];
    uint32_t ntok, nph, lit;
    mb_status st = parse_pattern(pattern, toks, &ntok, &nph, &lit, err);
    if (st != MB_OK)
        return st;
    pentry *e = entry_new(name, name_len, pattern, toks, ntok, nph, lit, schema);
    if (e == NULL)
        return mb_err_set(err, MB_ENOMEM, "subject register: out of memory");

    pthread_mutex_lock(&r->lock);
    /* Only registrations store the pointer, and they hold the lock. */
    snapshot *cur = atomic_load_explicit(&r->snap, memory_order_relaxed);
    snapshot *next = NULL;
    const pentry *old = find_name(cur, name, name_len, e->hash);
    if (old != NULL) {
        st = mb_err_set(err, MB_EEXIST, "subject pattern %s is already registered (%s)", name,
                        old->pattern);
        goto out;
    }
    for (uint32_t i = 0; i < cur->n; i++) {
        if (same_shape(cur->entries[i], e)) {
            st = mb_err_set(err, MB_EEXIST,
                            "subject pattern '%s' matches the same subjects as %s (%s)",
                            show_str(t, pattern), cur->entries[i]->name, cur->entries[i]->pattern);
            goto out;
        }
    }
    if (cur->n >= MB_SUBJECT_MAX_PATTERNS) {
        st = mb_err_set(err, MB_ENOSPC, "subject registry is full (%d patterns); %s refused",
                        MB_SUBJECT_MAX_PATTERNS, name);
        goto out;
    }
    e->index = cur->n;
    next = snapshot_build(cur->entries, cur->n, e);
    if (next == NULL) {
        st = mb_err_set(err, MB_ENOMEM, "subject register: out of memory");
        goto out;
    }
    next->prev = cur;
    atomic_store_explicit(&r->snap, next, memory_order_release);
out:
    pthread_mutex_unlock(&r->lock);
    if (st != MB_OK)
        mb__free(e);
    return st;
}

size_t mb_subject_count(const mb_subject_registry *r)
{
    return r != NULL ? snap_load(r)->n : 0;
}

mb_status mb_subject_at(const mb_subject_registry *r, size_t i, mb_subject_info *out)
{
    if (r == NULL || out == NULL)
        return MB_EINVAL;
    const snapshot *s = snap_load(r);
    if (i >= s->n)
        return MB_ENOTFOUND;
    fill_info(s->entries[i], out);
    return MB_OK;
}

mb_status mb_subject_lookup(const mb_subject_registry *r, const char *name, mb_subject_info *out,
                            mb_err *err)
{
    char q[SHOW_BUF];
    if (r == NULL || name == NULL)
        return mb_err_set(err, MB_EINVAL, "subject lookup: NULL argument");
    size_t len = strnlen(name, MB_SUBJECT_NAME_MAX + 1);
    const pentry *e = len <= MB_SUBJECT_NAME_MAX
                          ? find_name(snap_load(r), name, len, hash_name(name, len))
                          : NULL;
    if (e == NULL)
        return mb_err_set(err, MB_ENOTFOUND, "unknown subject pattern '%s'", show_str(q, name));
    fill_info(e, out);
    return MB_OK;
}

/* ---- matching ---- */

typedef struct span {
    uint16_t off, len;
} span;

/* The memo: per thread, the last subject that was checked, or built, and the
 * pattern it resolves to, for the snapshot it was resolved in. A game builds
 * a subject and publishes on it at once, and often publishes several
 * messages on one subject: then the check is one comparison. The key is the
 * snapshot's id, never reused, so a memo can only hit in the snapshot that
 * made it, which is the current one (and so is alive): a registration
 * empties every thread's memo by changing the snapshot. One entry per thread:
 * what it holds does not grow with the subjects seen. */
typedef struct memo {
    uint64_t snap_id; /* 0: empty */
    uint32_t entry;   /* index into the snapshot's entries */
    uint32_t len;
    char subject[MB_SUBJECT_MAX];
} memo;

static _Thread_local memo tl_memo;

static inline bool memo_hit(const snapshot *s, const char *subject, size_t len, uint32_t *entry)
{
    const memo *m = &tl_memo;
    if (m->snap_id != s->id || m->len != len || !mb__bytes_equal(m->subject, subject, len))
        return false;
    *entry = m->entry;
    return true;
}

static inline void memo_set(const snapshot *s, const char *subject, size_t len, uint32_t entry)
{
    memo *m = &tl_memo;
    m->snap_id = s->id;
    m->entry = entry;
    m->len = (uint32_t)len;
    memcpy(m->subject, subject, len);
}

/* Whether the memo holds the subject just built from e (tokens at sp, values
 * val). Compared with the sources, not with buf: reading words of
 * bytes just stored one by one would stall on store forwarding. */
static bool memo_built(const snapshot *s, const pentry *e, const char *const *val, size_t len,
                       const span *sp)
{
    const memo *m = &tl_memo;
    if (m->snap_id != s->id || m->len != len)
        return false;
    for (uint32_t k = 0; k < e->ntok; k++) {
        const ptok *t = &e->toks[k];
        if (k > 0 && m->subject[sp[k].off - 1] != '.')
            return false;
        if (!mb__bytes_equal(m->subject + sp[k].off, t->is_param ? val[t->ph] : t->text, sp[k].len))
            return false;
    }
    return true;
}

/* memcmp's order, inline: tokens are short, a call costs more than the loop. */
static inline int bytes_cmp(const char *a, const char *b, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return (unsigned char)a[i] < (unsigned char)b[i] ? -1 : 1;
    return 0;
}

/* The pattern matching tokens t[i..n) from `node`, or -1. Literal child first,
 * then the placeholder child. */
static int32_t match(const snapshot *s, uint32_t node, const char *subj, const span *t, uint32_t i,
                     uint32_t n)
{
    for (;;) {
        const tnode *nd = &s->nodes[node];
        if (i == n)
            return nd->terminal;
        const char *tok = subj + t[i].off;
        uint32_t tl = t[i].len;
        uint32_t lo = nd->edge_off, hi = nd->edge_off + nd->nedge;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            const tedge *ed = &s->edges[mid];
            int c = ed->len != tl ? (ed->len < tl ? -1 : 1) : bytes_cmp(ed->text, tok, tl);
            if (c == 0) {
                int32_t m = match(s, ed->child, subj, t, i + 1, n);
                if (m >= 0)
                    return m;
                break;
            }
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (nd->param == NO_NODE)
            return -1;
        node = nd->param;
        i++;
    }
}

/* ---- building ---- */

static mb_status build_fail(mb_subject_reason rs, mb_subject_reason *why)
{
    *why = rs;
    return rs == MB_SUBJECT_UNKNOWN_PATTERN ? MB_ENOTFOUND : MB_ESUBJECT;
}

static mb_status build_impl(mb_subject_registry *r, const char *name,
                            const mb_subject_param *params, size_t nparams, char *buf, size_t cap,
                            size_t *out_len, mb_subject_reason *why, mb_err *err)
{
    char q[SHOW_BUF], c[SHOW_BUF];
    const snapshot *s = snap_load(r);
    size_t nlen = strnlen(name, MB_SUBJECT_NAME_MAX + 1);
    const pentry *e =
        nlen <= MB_SUBJECT_NAME_MAX ? find_name(s, name, nlen, hash_name(name, nlen)) : NULL;
    if (e == NULL) {
        mb_err_set(err, MB_ENOTFOUND, "unknown subject pattern '%s'", show_str(q, name));
        return build_fail(MB_SUBJECT_UNKNOWN_PATTERN, why);
    }
    const char *val[MAX_TOKENS];
    size_t vlen[MAX_TOKENS];
    for (uint32_t k = 0; k < e->nph; k++)
        val[k] = NULL;
    size_t total = e->lit_len;
    for (size_t i = 0; i < nparams; i++) {
        const char *pn = params[i].name, *v = params[i].value;
        if (pn == NULL || v == NULL) {
            *why = MB_SUBJECT_OK;
            return mb_err_set(err, MB_EINVAL, "%s: parameter %zu has a NULL name or value", e->name,
                              i);
        }
        size_t pl = strnlen(pn, PARAM_NAME_MAX + 1);
        const ptok *ph = NULL;
        for (uint32_t k = 0; k < e->ntok && ph == NULL; k++) {
            const ptok *t = &e->toks[k];
            if (t->is_param && t->len == pl && mb__bytes_equal(t->text, pn, pl))
                ph = t;
        }
        if (ph == NULL) {
            show_str(q, pn);
            mb_err_set(err, MB_ESUBJECT, "%s: unexpected parameter %s (pattern has no {%s})",
                       e->name, q, q);
            return build_fail(MB_SUBJECT_UNEXPECTED_PARAM, why);
        }
        if (val[ph->ph] != NULL) {
            mb_err_set(err, MB_ESUBJECT, "%s: parameter %s given twice", e->name, pn);
            return build_fail(MB_SUBJECT_DUPLICATE_PARAM, why);
        }
        /* Scan one byte past the limit: enough to refuse the value. */
        size_t n = strnlen(v, MB_SUBJECT_TOKEN_MAX + 1);
        if (!mb__bytes_all_token(v, n))
            n = 0; /* find the byte below, for the message */
        for (; n <= MB_SUBJECT_TOKEN_MAX && v[n] != '\0'; n++) {
            if (!mb__bytes_is_token((unsigned char)v[n])) {
                mb_err_set(err, MB_ESUBJECT,
                           "%s: parameter %s: character '%s' at byte %zu outside " CHARSET, e->name,
                           pn, show(c, v + n, 1), n);
                return build_fail(MB_SUBJECT_BAD_CHAR, why);
            }
        }
        if (n == 0) {
            mb_err_set(err, MB_ESUBJECT,
                       "%s: parameter %s: empty value (1..%d bytes of " CHARSET ")", e->name, pn,
                       MB_SUBJECT_TOKEN_MAX);
            return build_fail(MB_SUBJECT_EMPTY_VALUE, why);
        }
        if (n > MB_SUBJECT_TOKEN_MAX) {
            n += strlen(v + n);
            mb_err_set(err, MB_ESUBJECT, "%s: parameter %s: value of %zu bytes exceeds %d", e->name,
                       pn, n, MB_SUBJECT_TOKEN_MAX);
            return build_fail(MB_SUBJECT_TOKEN_TOO_LONG, why);
        }
        val[ph->ph] = v;
        vlen[ph->ph] = n;
        total += n;
    }
    for (uint32_t k = 0; k < e->ntok; k++) {
        const ptok *t = &e->toks[k];
        if (t->is_param && val[t->ph] == NULL) {
            mb_err_set(err, MB_ESUBJECT, "%s: parameter %.*s missing", e->name, (int)t->len,
                       t->text);
            return build_fail(MB_SUBJECT_MISSING_PARAM, why);
        }
    }
    if (total > MB_SUBJECT_MAX) {
        mb_err_set(err, MB_ESUBJECT, "%s: subject of %zu bytes exceeds %d", e->name, total,
                   MB_SUBJECT_MAX);
        return build_fail(MB_SUBJECT_TOO_LONG, why);
    }
    if (total >= cap) {
        *why = MB_SUBJECT_OK;
        return mb_err_set(err, MB_ENOSPC, "%s: subject of %zu bytes does not fit in %zu bytes",
                          e->name, total, cap);
    }
    char *p = buf;
    span sp[MAX_TOKENS];
    for (uint32_t k = 0; k < e->ntok; k++) {
        const ptok *t = &e->toks[k];
        if (k > 0)
            *p++ = '.';
        const char *src = t->is_param ? val[t->ph] : t->text;
        size_t n = t->is_param ? vlen[t->ph] : t->len;
        mb__bytes_copy(p, src, n);
        sp[k].off = (uint16_t)(p - buf);
        sp[k].len = (uint16_t)n;
        p += n;
    }
    *p = '\0';
    /* The subject meets the byte rules by construction: resolve it now, from
     * the tokens in hand, for the check that usually follows (the memo). It
     * may resolve to a more specific pattern than e. */
    if (!memo_built(s, e, val, total, sp)) {
        int32_t mi = match(s, 0, buf, sp, 0, e->ntok);
        if (mi >= 0)
            memo_set(s, buf, total, (uint32_t)mi);
    }
    if (out_len != NULL)
        *out_len = total;
    *why = MB_SUBJECT_OK;
    return MB_OK;
}

mb_status mb_subject_build(mb_subject_registry *r, const char *name, const mb_subject_param *params,
                           size_t nparams, char *buf, size_t cap, size_t *out_len,
                           mb_subject_reason *reason, mb_err *err)
{
    mb_subject_reason why = MB_SUBJECT_OK;
    if (buf != NULL && cap > 0)
        buf[0] = '\0';
    if (reason != NULL)
        *reason = MB_SUBJECT_OK;
    if (r == NULL || name == NULL || buf == NULL || (params == NULL && nparams > 0))
        return mb_err_set(err, MB_EINVAL, "subject build: NULL argument");
    int timed = mb_histogram_sample(r->build_ns);
    uint64_t t0 = timed ? mb_clock_mono_ns(NULL) : 0;
    mb_status st = build_impl(r, name, params, nparams, buf, cap, out_len, &why, err);
    if (st != MB_OK && cap > 0)
        buf[0] = '\0';
    if (why != MB_SUBJECT_OK)
        mb_counter_add(r->failures[why], 1);
    if (reason != NULL)
        *reason = why;
    mb_counter_add(r->builds, 1);
    if (timed)
        mb_histogram_observe(r->build_ns, mb_clock_mono_ns(NULL) - t0);
    return st;
}

/* ---- checking ---- */

/* Split a publish subject into tokens and apply the byte rules: 1..255 bytes,
 * non-empty tokens of the token charset, at most 128 bytes each. */
static mb_subject_reason scan_subject(const char *subj, size_t len, span *t, uint32_t *ntok,
                                      mb_err *err)
{
    char q[SHOW_BUF], c[SHOW_BUF];
    if (len == 0) {
        mb_err_set(err, MB_ESUBJECT, "subject is empty");
        return MB_SUBJECT_EMPTY_TOKEN;
    }
    if (len > MB_SUBJECT_MAX) {
        mb_err_set(err, MB_ESUBJECT, "subject '%s' of %zu bytes exceeds %d", show(q, subj, len),
                   len, MB_SUBJECT_MAX);
        return MB_SUBJECT_TOO_LONG;
    }
    uint32_t n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && subj[i] != '.') {
            if (!mb__bytes_is_token((unsigned char)subj[i])) {
                mb_err_set(err, MB_ESUBJECT,
                           "subject '%s': character '%s' at byte %zu outside " CHARSET,
                           show(q, subj, len), show(c, subj + i, 1), i);
                return MB_SUBJECT_BAD_CHAR;
            }
            continue;
        }
        size_t tl = i - start;
        if (tl == 0) {
            mb_err_set(err, MB_ESUBJECT, "subject '%s': empty token at byte %zu",
                       show(q, subj, len), i);
            return MB_SUBJECT_EMPTY_TOKEN;
        }
        if (tl > MB_SUBJECT_TOKEN_MAX) {
            mb_err_set(err, MB_ESUBJECT, "subject '%s': token %u of %zu bytes exceeds %d",
                       show(q, subj, len), n + 1, tl, MB_SUBJECT_TOKEN_MAX);
            return MB_SUBJECT_TOKEN_TOO_LONG;
        }
        t[n].off = (uint16_t)start;
        t[n].len = (uint16_t)tl;
        n++;
        start = i + 1;
    }
    *ntok = n;
    return MB_SUBJECT_OK;
}

/* scan_subject's common case without its byte loop: a subject that breaks no
 * byte rule is split at the dots found 16 bytes at a time. False (t and
 * *ntok unspecified) when some rule is broken: scan_subject says which. */
static bool scan_fast(const char *subj, size_t len, span *t, uint32_t *ntok)
{
    uint64_t dots[4];
    if (len == 0 || len > MB_SUBJECT_MAX || !dot_map(subj, len, dots))
        return false;
    uint32_t n = 0;
    size_t start = 0;
    for (unsigned w = 0; w < 4; w++) {
        for (uint64_t m = dots[w]; m != 0; m &= m - 1) {
            size_t dot = w * 64u + (size_t)__builtin_ctzll(m);
            if (dot == start || dot - start > MB_SUBJECT_TOKEN_MAX)
                return false;
            t[n].off = (uint16_t)start;
            t[n].len = (uint16_t)(dot - start);
            n++;
            start = dot + 1;
        }
    }
    if (len == start || len - start > MB_SUBJECT_TOKEN_MAX)
        return false;
    t[n].off = (uint16_t)start;
    t[n].len = (uint16_t)(len - start);
    *ntok = n + 1;
    return true;
}

mb_status mb_subject_check(mb_subject_registry *r, const char *subject, size_t len,
                           mb_subject_info *out, mb_subject_reason *reason, mb_err *err)
{
    if (reason != NULL)
        *reason = MB_SUBJECT_OK;
    if (r == NULL || (subject == NULL && len > 0))
        return mb_err_set(err, MB_EINVAL, "subject check: NULL argument");
    int timed = mb_histogram_sample(r->check_ns);
    uint64_t t0 = timed ? mb_clock_mono_ns(NULL) : 0;
    span t[MAX_TOKENS];
    uint32_t n = 0;
    const snapshot *s = snap_load(r);
    uint32_t hit;
    mb_subject_reason why = MB_SUBJECT_OK;
    if (memo_hit(s, subject, len, &hit)) {
        fill_info(s->entries[hit], out);
    } else {
        if (!scan_fast(subject, len, t, &n))
            why = scan_subject(subject, len, t, &n, err);
        int32_t m = why == MB_SUBJECT_OK ? match(s, 0, subject, t, 0, n) : -1;
        if (m >= 0) {
            fill_info(s->entries[m], out);
            memo_set(s, subject, len, (uint32_t)m);
        } else if (why == MB_SUBJECT_OK) {
            char q[SHOW_BUF];
            mb_err_set(err, MB_ESUBJECT, "subject '%s': matches no registered pattern",
                       show(q, subject, len));
            why = MB_SUBJECT_NO_MATCH;
        }
    }
    if (why != MB_SUBJECT_OK)
        mb_counter_add(r->failures[why], 1);
    if (reason != NULL)
        *reason = why;
    mb_counter_add(r->checks, 1);
    if (timed)
        mb_histogram_observe(r->check_ns, mb_clock_mono_ns(NULL) - t0);
    return why == MB_SUBJECT_OK ? MB_OK : MB_ESUBJECT;
}

static mb_subject_reason sub_check(const char *p, size_t len, mb_err *err)
{
    char q[SHOW_BUF], c[SHOW_BUF];
    if (len == 0) {
        mb_err_set(err, MB_ESUBJECT, "subscription pattern is empty");
        return MB_SUBJECT_EMPTY_TOKEN;
    }
    if (len > MB_SUBJECT_MAX) {
        mb_err_set(err, MB_ESUBJECT, "subscription pattern '%s' of %zu bytes exceeds %d",
                   show(q, p, len), len, MB_SUBJECT_MAX);
        return MB_SUBJECT_TOO_LONG;
    }
    unsigned ntok = 0, nwild = 0, gt_at = 0;
    int first_wild = 0, has_gt = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != '.')
            continue;
        const char *s = p + start;
        size_t tl = i - start;
        ntok++;
        if (tl == 0) {
            mb_err_set(err, MB_ESUBJECT, "subscription pattern '%s': empty token at byte %zu",
                       show(q, p, len), i);
            return MB_SUBJECT_EMPTY_TOKEN;
        }
        if (tl == 1 && (s[0] == '*' || s[0] == '>')) {
            nwild++;
            if (ntok == 1)
                first_wild = 1;
            if (s[0] == '>' && !has_gt) {
                has_gt = 1;
                gt_at = ntok;
            }
        } else {
            for (size_t k = 0; k < tl; k++) {
                if (mb__bytes_is_token((unsigned char)s[k]))
                    continue;
                if (s[k] == '*' || s[k] == '>') {
                    mb_err_set(err, MB_ESUBJECT,
                               "subscription pattern '%s': wildcard '%c' inside token %u (a "
                               "wildcard must be a whole token)",
                               show(q, p, len), s[k], ntok);
                    return MB_SUBJECT_WILDCARD_IN_TOKEN;
                }
                mb_err_set(err, MB_ESUBJECT,
                           "subscription pattern '%s': character '%s' at byte %zu outside " CHARSET,
                           show(q, p, len), show(c, s + k, 1), start + k);
                return MB_SUBJECT_BAD_CHAR;
            }
            if (tl > MB_SUBJECT_TOKEN_MAX) {
                mb_err_set(err, MB_ESUBJECT,
                           "subscription pattern '%s': token %u of %zu bytes exceeds %d",
                           show(q, p, len), ntok, tl, MB_SUBJECT_TOKEN_MAX);
                return MB_SUBJECT_TOKEN_TOO_LONG;
            }
        }
        start = i + 1;
    }
    if (nwild == ntok) {
        mb_err_set(err, MB_ESUBJECT, "subscription pattern '%s': every token is a wildcard",
                   show(q, p, len));
        return MB_SUBJECT_ALL_WILDCARDS;
    }
    if (first_wild) {
        mb_err_set(err, MB_ESUBJECT, "subscription pattern '%s': the first token is a wildcard",
                   show(q, p, len));
        return MB_SUBJECT_WILDCARD_FIRST;
    }
    if (has_gt && gt_at != ntok) {
        mb_err_set(err, MB_ESUBJECT,
                   "subscription pattern '%s': '>' is token %u of %u; it may only be the last",
                   show(q, p, len), gt_at, ntok);
        return MB_SUBJECT_GT_NOT_LAST;
    }
    if (nwild > MB_SUBJECT_MAX_WILDCARDS) {
        mb_err_set(err, MB_ESUBJECT, "subscription pattern '%s': %u wildcard tokens exceed %d",
                   show(q, p, len), nwild, MB_SUBJECT_MAX_WILDCARDS);
        return MB_SUBJECT_TOO_MANY_WILDCARDS;
    }
    return MB_SUBJECT_OK;
}

mb_status mb_subject_check_sub(mb_subject_registry *r, const char *pattern, size_t len,
                               mb_subject_reason *reason, mb_err *err)
{
    if (reason != NULL)
        *reason = MB_SUBJECT_OK;
    if (r == NULL || (pattern == NULL && len > 0))
        return mb_err_set(err, MB_EINVAL, "subscription check: NULL argument");
    mb_subject_reason why = sub_check(pattern, len, err);
    if (why != MB_SUBJECT_OK)
        mb_counter_add(r->failures[why], 1);
    mb_counter_add(r->sub_checks, 1);
    if (reason != NULL)
        *reason = why;
    return why == MB_SUBJECT_OK ? MB_OK : MB_ESUBJECT;
}

/* ---- rooms ---- */

mb_status mb_subject_room_subzone(const char *room_id, char *buf, size_t cap, mb_err *err)
{
    char q[SHOW_BUF], c[SHOW_BUF];
    if (room_id == NULL || buf == NULL)
        return mb_err_set(err, MB_EINVAL, "room subzone: NULL argument");
    if (cap > 0)
        buf[0] = '\0';
    size_t len = strnlen(room_id, MB_SUBJECT_TOKEN_MAX + 1);
    if (len == 0)
        return mb_err_set(err, MB_ESUBJECT, "room id is empty");
    for (size_t i = 0; i < len; i++) {
        if (!mb__bytes_is_token((unsigned char)room_id[i]))
            return mb_err_set(err, MB_ESUBJECT,
                              "room id '%s': character '%s' at byte %zu outside " CHARSET,
                              show(q, room_id, len), show(c, room_id + i, 1), i);
    }
    if (len > MB_SUBJECT_TOKEN_MAX)
        return mb_err_set(err, MB_ESUBJECT, "room id '%s' of %zu bytes exceeds %d",
                          show(q, room_id, len), len + strlen(room_id + len), MB_SUBJECT_TOKEN_MAX);
    /* The third '_'-separated part; an empty one is no subzone either, since
     * it could not be a subject token. */
    const char *p = room_id, *end = room_id + len;
    for (int part = 0; part < 2 && p != NULL; part++) {
        p = memchr(p, '_', (size_t)(end - p));
        if (p != NULL)
            p++;
    }
    const char *sz = "unknown";
    size_t sl = 7;
    if (p != NULL) {
        const char *e = memchr(p, '_', (size_t)(end - p));
        size_t l = (size_t)((e != NULL ? e : end) - p);
        if (l > 0) {
            sz = p;
            sl = l;
        }
    }
    if (sl >= cap)
        return mb_err_set(err, MB_ENOSPC, "room subzone: %zu bytes do not fit in %zu", sl + 1, cap);
    memcpy(buf, sz, sl);
    buf[sl] = '\0';
    return MB_OK;
}
