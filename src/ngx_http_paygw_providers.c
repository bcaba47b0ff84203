
/*
 * paygw: the provider registry.
 *
 * A provider is one file (its protocol and its ngx_http_paygw_provider_t)
 * and one row here.  "paygw_channel NAME [provider=PROVIDER]" configures
 * a channel of a provider; several channels may share one (two card
 * acquirers, two Alipay apps).
 *
 * The first rows have fixed slots in paygw_zone, for the channels named
 * after them: their metrics series have always been shown, configured or
 * not, and keep their labels.  A new provider gets -1: its channels get
 * slots as they are configured.
 */


#include "ngx_http_paygw_channel.h"


extern ngx_http_paygw_provider_t  ngx_http_paygw_bank_provider;
extern ngx_http_paygw_provider_t  ngx_http_paygw_alipay_provider;
extern ngx_http_paygw_provider_t  ngx_http_paygw_wechat_provider;


static ngx_http_paygw_provider_t  *ngx_http_paygw_providers[] = {
    &ngx_http_paygw_bank_provider,
    &ngx_http_paygw_alipay_provider,
    &ngx_http_paygw_wechat_provider,
    NULL
};


ngx_http_paygw_provider_t *
ngx_http_paygw_provider_find(ngx_str_t *name)
{
    ngx_uint_t                  i;
    ngx_http_paygw_provider_t  *pv;

    for (i = 0; ngx_http_paygw_providers[i]; i++) {
        pv = ngx_http_paygw_providers[i];

        if (pv->name.len == name->len
            && ngx_strncmp(pv->name.data, name->data, name->len) == 0)
        {
            return pv;
        }
    }

    return NULL;
}


/* the fixed slot of a channel of this name, or NGX_DECLINED */

ngx_int_t
ngx_http_paygw_provider_slot(ngx_str_t *name)
{
    ngx_http_paygw_provider_t  *pv;

    pv = ngx_http_paygw_provider_find(name);

    return (pv && pv->slot >= 0) ? pv->slot : NGX_DECLINED;
}


/* the fixed slots' names, whether such channels are configured or not */

void
ngx_http_paygw_provider_slots(ngx_str_t *slot_names)
{
    ngx_uint_t                  i;
    ngx_http_paygw_provider_t  *pv;

    for (i = 0; ngx_http_paygw_providers[i]; i++) {
        pv = ngx_http_paygw_providers[i];

        if (pv->slot >= 0) {
            slot_names[pv->slot] = pv->name;
        }
    }
}


/* "bank_card, alipay or wechat", for messages */

u_char *
ngx_http_paygw_provider_names(u_char *p, u_char *last)
{
    ngx_uint_t  i;

    for (i = 0; ngx_http_paygw_providers[i]; i++) {
        p = ngx_slprintf(p, last, "%s%V",
                         i == 0 ? ""
                         : ngx_http_paygw_providers[i + 1] ? ", " : " or ",
                         &ngx_http_paygw_providers[i]->name);
    }

    return p;
}
