
/*
 * paygw: the authorization policy.
 *
 *     paygw_policy FILE;
 *
 * One rule a line, first match wins, and a request no rule matches is
 * denied.  A rule is "allow" or "deny" and conditions that must all hold:
 *
 *     role=merchant,viewer   key=web-1,web-2   merchant=M100
 *     api=create_payment,get_payment,find_payment,refund,get_refund,
 *         close_payment,resolve
 *     channel=alipay,wechat  amount<=100000  amount>5000
 *     reason="text shown in the 403"
 *
 * "amount" is the payment's on create and the refund's on refund; a rule
 * with amount= or channel= matches only requests that carry them.  A
 * channel is a provider's name or a channel configured before.  The
 * file is compiled when the configuration is loaded ("nginx -t" reports
 * file:line), so "nginx -s reload" applies a new policy without dropping
 * a request.  Built-in limits stay: viewer keys only read.
 */


#include "ngx_http_paygw_policy.h"
#include "ngx_http_paygw_api.h"
#include "ngx_http_paygw_channel.h"


#define NGX_HTTP_PAYGW_ANY  0


typedef struct {
    ngx_uint_t                    allow;
    ngx_uint_t                    roles;        /* bit (1 << role) */
    ngx_uint_t                    apis;         /* bit (1 << api) */
    ngx_array_t                  *channels;     /* ngx_str_t */
    ngx_array_t                  *keys;         /* ngx_str_t */
    ngx_array_t                  *merchants;    /* ngx_str_t */
    int64_t                       amount_le;    /* -1: no bound */
    int64_t                       amount_gt;    /* -1: no bound */
    ngx_str_t                     reason;
    ngx_uint_t                    line;
} ngx_http_paygw_rule_t;


typedef struct {
    ngx_array_t                   rules;        /* ngx_http_paygw_rule_t */
    ngx_str_t                     file;
} ngx_http_paygw_policy_t;


static char *ngx_http_paygw_policy_line(ngx_conf_t *cf,
    ngx_http_paygw_policy_t *pol, u_char *p, u_char *last, ngx_uint_t line);
static char *ngx_http_paygw_policy_cond(ngx_conf_t *cf,
    ngx_http_paygw_rule_t *rule, ngx_str_t *word);
static ngx_int_t ngx_http_paygw_policy_bits(ngx_str_t *list,
    const char **names, ngx_uint_t n, ngx_uint_t *bits);
static ngx_array_t *ngx_http_paygw_policy_list(ngx_conf_t *cf,
    ngx_str_t *list);
static ngx_int_t ngx_http_paygw_policy_channels(ngx_conf_t *cf,
    ngx_array_t *list);
static ngx_int_t ngx_http_paygw_policy_in(ngx_array_t *list, ngx_str_t *v);
static ngx_int_t ngx_http_paygw_policy_match(ngx_http_paygw_rule_t *rule,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t role, ngx_str_t *channel,
    int64_t amount);


static const char  *ngx_http_paygw_policy_roles[] = {
    "", "viewer", "merchant", "admin"
};

/* indexed by NGX_HTTP_PAYGW_API_* */
static const char  *ngx_http_paygw_policy_apis[] = {
    "", "create_payment", "get_payment", "find_payment", "refund",
    "get_refund", "close_payment", "resolve"
};


char *
ngx_http_paygw_policy(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    char                     *rv;
    u_char                   *p, *last, *nl;
    size_t                    n;
    ngx_str_t                *value, text;
    ngx_uint_t                line;
    ngx_http_paygw_policy_t  *pol;

    if (pmcf->policy) {
        return "is duplicate";
    }

    value = cf->args->elts;

    pol = ngx_pcalloc(cf->pool, sizeof(ngx_http_paygw_policy_t));
    if (pol == NULL) {
        return NGX_CONF_ERROR;
    }

    pol->file = value[1];

    if (ngx_array_init(&pol->rules, cf->pool, 8,
                       sizeof(ngx_http_paygw_rule_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    rv = ngx_http_paygw_read_file(cf, &pol->file, "paygw_policy file",
                                  1024 * 1024, &text);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    p = text.data;
    n = text.len;

    last = p + n;

    for (line = 1; p < last; line++, p = nl + 1) {
        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        rv = ngx_http_paygw_policy_line(cf, pol, p, nl, line);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    if (pol->rules.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "paygw_policy file \"%V\" has no rules: every "
                           "request would be denied", &pol->file);
        return NGX_CONF_ERROR;
    }

    pmcf->policy = pol;

    return NGX_CONF_OK;
}


static char *
ngx_http_paygw_policy_line(ngx_conf_t *cf, ngx_http_paygw_policy_t *pol,
    u_char *p, u_char *last, ngx_uint_t line)
{
    char                   *rv;
    u_char                 *start;
    ngx_str_t               word;
    ngx_uint_t              first;
    ngx_http_paygw_rule_t   rule;

    ngx_memzero(&rule, sizeof(ngx_http_paygw_rule_t));
    rule.amount_le = -1;
    rule.amount_gt = -1;
    rule.line = line;
    first = 1;

    for ( ;; ) {
        while (p < last && (*p == ' ' || *p == '\t' || *p == '\r')) {
            p++;
        }

        if (p == last || *p == '#') {
            break;
        }

        start = p;

        /* reason="..." may hold spaces */

        if (last - p > 8 && ngx_strncmp(p, "reason=\"", 8) == 0) {
            p = ngx_strlchr(p + 8, last, '"');
            if (p == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unterminated reason in %V:%ui",
                                   &pol->file, line);
                return NGX_CONF_ERROR;
            }

            p++;

        } else {
            while (p < last && *p != ' ' && *p != '\t' && *p != '\r') {
                p++;
            }
        }

        word.data = start;
        word.len = p - start;

        if (first) {
            first = 0;

            if (word.len == 5 && ngx_strncmp(word.data, "allow", 5) == 0) {
                rule.allow = 1;
                continue;
            }

            if (word.len == 4 && ngx_strncmp(word.data, "deny", 4) == 0) {
                continue;
            }

            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "a rule starts with \"allow\" or \"deny\", "
                               "not \"%V\", in %V:%ui", &word, &pol->file,
                               line);
            return NGX_CONF_ERROR;
        }

        rv = ngx_http_paygw_policy_cond(cf, &rule, &word);
        if (rv != NGX_CONF_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%s \"%V\" in %V:%ui",
                               rv, &word, &pol->file, line);
            return NGX_CONF_ERROR;
        }
    }

    if (first) {
        return NGX_CONF_OK;             /* blank or comment */
    }

    if (rule.reason.len == 0) {
        ngx_str_set(&rule.reason, "denied by policy");
    }

    if (ngx_array_push(&pol->rules) == NULL) {
        return NGX_CONF_ERROR;
    }

    ((ngx_http_paygw_rule_t *) pol->rules.elts)[pol->rules.nelts - 1] = rule;

    return NGX_CONF_OK;
}


static char *
ngx_http_paygw_policy_cond(ngx_conf_t *cf, ngx_http_paygw_rule_t *rule,
    ngx_str_t *word)
{
    ngx_str_t  v;
    int64_t    n;

#define ngx_paygw_cond(name)                                                 \
    (word->len > sizeof(name) - 1                                            \
     && ngx_strncmp(word->data, name, sizeof(name) - 1) == 0                 \
     && (v.data = word->data + sizeof(name) - 1,                             \
         v.len = word->len - (sizeof(name) - 1), 1))

    if (ngx_paygw_cond("role=")) {
        return ngx_http_paygw_policy_bits(&v, ngx_http_paygw_policy_roles, 4,
                                          &rule->roles) == NGX_OK
               ? NGX_CONF_OK : "unknown role in";
    }

    if (ngx_paygw_cond("api=")) {
        return ngx_http_paygw_policy_bits(&v, ngx_http_paygw_policy_apis, 8,
                                          &rule->apis) == NGX_OK
               ? NGX_CONF_OK : "unknown api in";
    }

    if (ngx_paygw_cond("channel=")) {
        rule->channels = ngx_http_paygw_policy_list(cf, &v);
        return (rule->channels
                && ngx_http_paygw_policy_channels(cf, rule->channels)
                   == NGX_OK)
               ? NGX_CONF_OK : "unknown channel in";
    }

    if (ngx_paygw_cond("key=")) {
        rule->keys = ngx_http_paygw_policy_list(cf, &v);
        return rule->keys ? NGX_CONF_OK : "invalid list in";
    }

    if (ngx_paygw_cond("merchant=")) {
        rule->merchants = ngx_http_paygw_policy_list(cf, &v);
        return rule->merchants ? NGX_CONF_OK : "invalid list in";
    }

    if (ngx_paygw_cond("amount<=") || ngx_paygw_cond("amount>")) {
        n = ngx_atoof(v.data, v.len);
        if (n < 0) {
            return "invalid amount in";
        }

        if (word->data[6] == '<') {
            rule->amount_le = n;
        } else {
            rule->amount_gt = n;
        }

        return NGX_CONF_OK;
    }

    if (ngx_paygw_cond("reason=\"") && v.len >= 1
        && v.data[v.len - 1] == '"')
    {
        rule->reason.data = v.data;
        rule->reason.len = v.len - 1;
        return NGX_CONF_OK;
    }

#undef ngx_paygw_cond

    return "unknown condition";
}


static ngx_int_t
ngx_http_paygw_policy_bits(ngx_str_t *list, const char **names, ngx_uint_t n,
    ngx_uint_t *bits)
{
    u_char      *p, *last, *comma;
    size_t       len;
    ngx_uint_t   i;

    p = list->data;
    last = p + list->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        len = comma - p;

        for (i = 0; i < n; i++) {
            if (ngx_strlen(names[i]) == len && len
                && ngx_strncmp(names[i], p, len) == 0)
            {
                break;
            }
        }

        if (i == n) {
            return NGX_ERROR;
        }

        *bits |= (ngx_uint_t) 1 << i;
        p = comma + 1;
    }

    return *bits ? NGX_OK : NGX_ERROR;
}


static ngx_array_t *
ngx_http_paygw_policy_list(ngx_conf_t *cf, ngx_str_t *list)
{
    u_char       *p, *last, *comma;
    ngx_str_t    *s;
    ngx_array_t  *a;

    a = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
    if (a == NULL) {
        return NULL;
    }

    p = list->data;
    last = p + list->len;

    while (p < last) {
        comma = ngx_strlchr(p, last, ',');
        if (comma == NULL) {
            comma = last;
        }

        if (comma == p) {
            return NULL;
        }

        s = ngx_array_push(a);
        if (s == NULL) {
            return NULL;
        }

        s->data = p;
        s->len = comma - p;
        p = comma + 1;
    }

    return a->nelts ? a : NULL;
}


ngx_int_t
ngx_http_paygw_policy_check(ngx_http_request_t *r, ngx_http_paygw_ctx_t *ctx)
{
    int64_t                      amount;
    ngx_str_t                   *channel;
    ngx_uint_t                   i;
    ngx_http_paygw_rule_t       *rule;
    ngx_http_paygw_policy_t     *pol;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);
    pol = pmcf->policy;

    if (pol == NULL) {
        return NGX_OK;
    }

    /* what the request carries: -1 / NULL when it carries nothing */

    amount = -1;
    channel = NULL;

    if (ctx->api == NGX_HTTP_PAYGW_API_CREATE) {
        amount = ctx->payment.amount;
        channel = &ctx->payment.channel;

    } else if (ctx->api == NGX_HTTP_PAYGW_API_REFUND) {
        amount = ctx->refund.amount;
    }

    rule = pol->rules.elts;

    for (i = 0; i < pol->rules.nelts; i++) {

        if (ngx_http_paygw_policy_match(&rule[i], ctx, ctx->auth.key->role,
                                        channel, amount)
            != NGX_OK)
        {
            continue;
        }

        if (rule[i].allow) {
            return NGX_OK;
        }

        return ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "%V (policy line %ui)", &rule[i].reason,
                                   rule[i].line);
    }

    return ngx_http_paygw_fail(r, ctx, NGX_HTTP_FORBIDDEN, "forbidden",
                               "no policy rule allows this request");
}


static ngx_int_t
ngx_http_paygw_policy_match(ngx_http_paygw_rule_t *rule,
    ngx_http_paygw_ctx_t *ctx, ngx_uint_t role, ngx_str_t *channel,
    int64_t amount)
{
    if (rule->roles && !(rule->roles & ((ngx_uint_t) 1 << role))) {
        return NGX_DECLINED;
    }

    if (rule->apis && !(rule->apis & ((ngx_uint_t) 1 << ctx->api))) {
        return NGX_DECLINED;
    }

    if (rule->channels
        && (channel == NULL
            || ngx_http_paygw_policy_in(rule->channels, channel) != NGX_OK))
    {
        return NGX_DECLINED;
    }

    if (rule->keys
        && ngx_http_paygw_policy_in(rule->keys, &ctx->auth.key_id) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (rule->merchants
        && ngx_http_paygw_policy_in(rule->merchants, &ctx->merchant_id)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (rule->amount_le >= 0 && (amount < 0 || amount > rule->amount_le)) {
        return NGX_DECLINED;
    }

    if (rule->amount_gt >= 0 && (amount < 0 || amount <= rule->amount_gt)) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_policy_channels(ngx_conf_t *cf, ngx_array_t *list)
{
    ngx_str_t   *s;
    ngx_uint_t   i;

    s = list->elts;

    for (i = 0; i < list->nelts; i++) {
        if (ngx_http_paygw_channel_known(cf, &s[i]) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_paygw_policy_in(ngx_array_t *list, ngx_str_t *v)
{
    ngx_str_t   *s;
    ngx_uint_t   i;

    s = list->elts;

    for (i = 0; i < list->nelts; i++) {
        if (s[i].len == v->len && ngx_strncmp(s[i].data, v->data, v->len) == 0)
        {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}
