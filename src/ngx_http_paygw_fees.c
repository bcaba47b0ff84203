
/*
 * paygw: transaction fees (SPEC §7).
 *
 *     paygw_fees FILE;
 *
 * FILE has one schedule a line: "merchant_id channel bps fixed min max"
 * ("#" starts a comment; "-" for no minimum or no maximum; merchant "*"
 * applies to merchants without a line of their own for that channel).
 * It is read when the configuration is loaded: a broken file fails
 * "nginx -t" with its file:line, and "nginx -s reload" applies a new one
 * to payments that succeed from then on.
 *
 *     fee = round_half_up(amount * bps / 10000) + fixed, in [min, max]
 *     net_amount = amount - fee
 *
 * The fee is computed once, when the payment succeeds, and stored with
 * it; a refund returns its share of that stored fee (store.c).
 */


#include "ngx_http_paygw_fees.h"


#define NGX_HTTP_PAYGW_FEES_NONE   -1


typedef struct {
    ngx_str_t                     merchant_id;
    ngx_str_t                     channel;
    int64_t                       bps;
    int64_t                       fixed;
    int64_t                       min;           /* -1: none */
    int64_t                       max;           /* -1: none */
} ngx_http_paygw_fee_t;


static char *ngx_http_paygw_fees_line(ngx_conf_t *cf, ngx_array_t *fees,
    u_char *p, u_char *last, ngx_str_t *file, ngx_uint_t line);
static ngx_uint_t ngx_http_paygw_fees_words(u_char *p, u_char *last,
    ngx_str_t *word);
static char *ngx_http_paygw_fees_values(ngx_conf_t *cf,
    ngx_http_paygw_fee_t *fee, ngx_str_t *word, ngx_str_t *file,
    ngx_uint_t line);
static char *ngx_http_paygw_fees_duplicate(ngx_conf_t *cf,
    ngx_array_t *fees, ngx_http_paygw_fee_t *fee, ngx_str_t *file,
    ngx_uint_t line);
static ngx_int_t ngx_http_paygw_fees_int(ngx_str_t *word, int64_t max,
    ngx_uint_t dash, int64_t *n);
static ngx_http_paygw_fee_t *ngx_http_paygw_fees_find(ngx_array_t *fees,
    ngx_str_t *merchant_id, ngx_str_t *channel);


char *
ngx_http_paygw_fees(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_paygw_main_conf_t *pmcf = conf;

    u_char      *p, *last, *nl;
    char        *rv;
    ngx_str_t   *value, file, text;
    ngx_uint_t   line;
    ngx_array_t *fees;

    if (pmcf->fees) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    rv = ngx_http_paygw_read_file(cf, &file, "paygw_fees file",
                                  16 * 1024 * 1024, &text);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    fees = ngx_array_create(cf->pool, 8, sizeof(ngx_http_paygw_fee_t));
    if (fees == NULL) {
        return NGX_CONF_ERROR;
    }

    p = text.data;
    last = p + text.len;

    for (line = 1; p < last; line++, p = nl + 1) {

        nl = ngx_strlchr(p, last, '\n');
        if (nl == NULL) {
            nl = last;
        }

        rv = ngx_http_paygw_fees_line(cf, fees, p, nl, &file, line);
        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    pmcf->fees = fees;

    return NGX_CONF_OK;
}


static char *
ngx_http_paygw_fees_line(ngx_conf_t *cf, ngx_array_t *fees, u_char *p,
    u_char *last, ngx_str_t *file, ngx_uint_t line)
{
    ngx_str_t              word[7];
    ngx_uint_t             n, i;
    ngx_http_paygw_fee_t  *fee;

    n = ngx_http_paygw_fees_words(p, last, word);

    if (n == 0) {
        return NGX_CONF_OK;
    }

    if (n != 6) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid fee schedule in %V:%ui: expected "
                           "\"merchant_id channel bps fixed min max\"",
                           file, line);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < 2; i++) {
        if (word[i].len == 0 || word[i].len > 64) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid %s \"%V\" in %V:%ui",
                               i ? "channel" : "merchant_id", &word[i],
                               file, line);
            return NGX_CONF_ERROR;
        }
    }

    fee = ngx_array_push(fees);
    if (fee == NULL) {
        return NGX_CONF_ERROR;
    }

    fee->merchant_id.len = word[0].len;
    fee->merchant_id.data = ngx_pstrdup(cf->pool, &word[0]);
    fee->channel.len = word[1].len;
    fee->channel.data = ngx_pstrdup(cf->pool, &word[1]);

    if (fee->merchant_id.data == NULL || fee->channel.data == NULL) {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_paygw_fees_values(cf, fee, word, file, line)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return ngx_http_paygw_fees_duplicate(cf, fees, fee, file, line);
}


/* up to 7 words before a "#": 7 says there are too many */

static ngx_uint_t
ngx_http_paygw_fees_words(u_char *p, u_char *last, ngx_str_t *word)
{
    u_char      *start;
    ngx_uint_t   n;

    n = 0;

    while (p < last) {

        while (p < last && (*p == ' ' || *p == '\t' || *p == '\r')) {
            p++;
        }

        if (p == last || *p == '#') {
            break;
        }

        start = p;

        while (p < last && *p != ' ' && *p != '\t' && *p != '\r') {
            p++;
        }

        if (n == 7) {
            break;
        }

        word[n].data = start;
        word[n].len = p - start;
        n++;
    }

    return n;
}


/* bps, fixed, min and max: words 2 to 5 */

static char *
ngx_http_paygw_fees_values(ngx_conf_t *cf, ngx_http_paygw_fee_t *fee,
    ngx_str_t *word, ngx_str_t *file, ngx_uint_t line)
{
    if (ngx_http_paygw_fees_int(&word[2], 10000, 0, &fee->bps) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid rate \"%V\" in %V:%ui: basis points, "
                           "0..10000", &word[2], file, line);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_paygw_fees_int(&word[3], NGX_HTTP_PAYGW_MAX_AMOUNT, 0,
                                &fee->fixed)
        != NGX_OK
        || ngx_http_paygw_fees_int(&word[4], NGX_HTTP_PAYGW_MAX_AMOUNT, 1,
                                   &fee->min)
           != NGX_OK
        || ngx_http_paygw_fees_int(&word[5], NGX_HTTP_PAYGW_MAX_AMOUNT, 1,
                                   &fee->max)
           != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid fixed, min or max in %V:%ui: minor "
                           "units 0..10^12, \"-\" for no min or max",
                           file, line);
        return NGX_CONF_ERROR;
    }

    if (fee->min != NGX_HTTP_PAYGW_FEES_NONE
        && fee->max != NGX_HTTP_PAYGW_FEES_NONE
        && fee->min > fee->max)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "fee minimum above its maximum in %V:%ui",
                           file, line);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the schedule just pushed (the last one) against those before it */

static char *
ngx_http_paygw_fees_duplicate(ngx_conf_t *cf, ngx_array_t *fees,
    ngx_http_paygw_fee_t *fee, ngx_str_t *file, ngx_uint_t line)
{
    ngx_uint_t             i;
    ngx_http_paygw_fee_t  *dup;

    dup = fees->elts;

    for (i = 0; i < fees->nelts - 1; i++) {
        if (dup[i].merchant_id.len == fee->merchant_id.len
            && dup[i].channel.len == fee->channel.len
            && ngx_strncmp(dup[i].merchant_id.data, fee->merchant_id.data,
                           fee->merchant_id.len) == 0
            && ngx_strncmp(dup[i].channel.data, fee->channel.data,
                           fee->channel.len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate fee schedule for merchant \"%V\" "
                               "channel \"%V\" in %V:%ui",
                               &fee->merchant_id, &fee->channel, file, line);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_paygw_fees_int(ngx_str_t *word, int64_t max, ngx_uint_t dash,
    int64_t *n)
{
    u_char  *p;

    if (dash && word->len == 1 && word->data[0] == '-') {
        *n = NGX_HTTP_PAYGW_FEES_NONE;
        return NGX_OK;
    }

    if (word->len == 0 || word->len > 13) {
        return NGX_ERROR;
    }

    *n = 0;

    for (p = word->data; p < word->data + word->len; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_ERROR;
        }

        *n = *n * 10 + (*p - '0');
    }

    return (*n <= max) ? NGX_OK : NGX_ERROR;
}


/* the merchant's own line for the channel, else the "*" one */

static ngx_http_paygw_fee_t *
ngx_http_paygw_fees_find(ngx_array_t *fees, ngx_str_t *merchant_id,
    ngx_str_t *channel)
{
    ngx_uint_t             i;
    ngx_http_paygw_fee_t  *fee, *any;

    fee = fees->elts;
    any = NULL;

    for (i = 0; i < fees->nelts; i++) {

        if (fee[i].channel.len != channel->len
            || ngx_strncmp(fee[i].channel.data, channel->data, channel->len)
               != 0)
        {
            continue;
        }

        if (fee[i].merchant_id.len == merchant_id->len
            && ngx_strncmp(fee[i].merchant_id.data, merchant_id->data,
                           merchant_id->len) == 0)
        {
            return &fee[i];
        }

        if (fee[i].merchant_id.len == 1 && fee[i].merchant_id.data[0] == '*')
        {
            any = &fee[i];
        }
    }

    return any;
}


/*
 * The fee of a payment that succeeds now; without a schedule for its
 * merchant and channel the fee is 0.  amount <= 10^12 and bps <= 10^4:
 * the product fits in int64.
 */

void
ngx_http_paygw_fees_compute(ngx_http_request_t *r,
    ngx_http_paygw_payment_t *p)
{
    int64_t                      fee;
    ngx_http_paygw_fee_t        *f;
    ngx_http_paygw_main_conf_t  *pmcf;

    pmcf = ngx_http_get_module_main_conf(r, ngx_http_paygw_module);

    f = pmcf->fees ? ngx_http_paygw_fees_find(pmcf->fees, &p->merchant_id,
                                              &p->channel)
                   : NULL;

    fee = ngx_http_paygw_fee(p->amount, f ? f->bps : 0, f ? f->fixed : 0,
                             f ? f->min : NGX_HTTP_PAYGW_FEES_NONE,
                             f ? f->max : NGX_HTTP_PAYGW_FEES_NONE);

    p->fee = fee;
    p->net_amount = p->amount - fee;
    p->fee_set = 1;

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "paygw fee of %V: %L of %L (%s schedule)",
                   &p->payment_no, fee, p->amount, f ? "a" : "no");
}


int64_t
ngx_http_paygw_fee(int64_t amount, int64_t bps, int64_t fixed, int64_t min,
    int64_t max)
{
    int64_t  fee;

    fee = (amount * bps + 5000) / 10000 + fixed;

    if (min != NGX_HTTP_PAYGW_FEES_NONE && fee < min) {
        fee = min;
    }

    if (max != NGX_HTTP_PAYGW_FEES_NONE && fee > max) {
        fee = max;
    }

    return fee;
}
