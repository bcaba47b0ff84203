
/*
 * libFuzzer: the Authorization header parser (ngx_http_paygw_auth.c,
 * included for its static parser).  Properties: an accepted header has
 * the scheme, a key id, a 16-64 character nonce, a 64 hex digit sig and
 * a ts whose bytes lie inside the header; nothing reads past the value.
 */


#include "../../src/ngx_http_paygw_auth.c"
#include "shim.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char                 *copy;
    ngx_str_t               value;
    const char             *why;
    ngx_http_paygw_auth_t   auth;

    /* an exact-size copy: ASan sees any read past the header's end */

    copy = malloc(size ? size : 1);
    if (copy == NULL) {
        return 0;
    }

    memcpy(copy, data, size);

    value.data = copy;
    value.len = size;
    why = NULL;

    if (ngx_http_paygw_auth_parse(&value, &auth, &why) == NGX_OK) {

        if (auth.key_id.len < 1 || auth.key_id.len > 64
            || auth.nonce.len < 16 || auth.nonce.len > 64
            || auth.sig.len != 64
            || auth.ts_raw.data < copy
            || auth.ts_raw.data + auth.ts_raw.len > copy + size
            || size < ngx_http_paygw_scheme.len)
        {
            abort();
        }

    } else if (why == NULL) {
        abort();
    }

    free(copy);
    fz_pool_reset();

    return 0;
}
