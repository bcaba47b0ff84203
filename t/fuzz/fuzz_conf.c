
/*
 * libFuzzer: the files read with the configuration, through the
 * directives' own handlers and the real file reader
 * (ngx_http_paygw_conf_file.c): paygw_keys, paygw_policy, paygw_fees,
 * paygw_webhook_secrets, a secret file (passwords, shared keys) and a PEM
 * key.  The first byte picks the reader; the rest is the file, written to
 * a temporary file for each input.  Properties: a file is either taken
 * or refused with a message (never a crash, never silence); a secret is
 * one line without its newline.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_paygw.h"
#include "ngx_http_paygw_auth.h"
#include "ngx_http_paygw_channel.h"
#include "ngx_http_paygw_crypto.h"
#include "ngx_http_paygw_fees.h"
#include "ngx_http_paygw_policy.h"
#include "ngx_http_paygw_webhook.h"
#include "shim.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


static char  fz_path[64];


static void
fz_write(const uint8_t *data, size_t size)
{
    FILE  *f;

    if (fz_path[0] == '\0') {
        snprintf(fz_path, sizeof(fz_path), "/tmp/paygw-fuzz-conf.%d",
                 (int) getpid());
    }

    f = fopen(fz_path, "w");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        abort();
    }
}


static void
fz_secret(ngx_conf_t *cf, const uint8_t *data, size_t size)
{
    char       *rv;
    ngx_str_t   path, secret;

    path.data = (u_char *) fz_path;
    path.len = ngx_strlen(fz_path);

    rv = ngx_http_paygw_read_secret(cf, &path, "secret_file", &secret);

    if (rv == NGX_CONF_OK
        && (secret.len > size || memchr(secret.data, '\n', secret.len)
            || secret.data[secret.len] != '\0'))
    {
        abort();
    }
}


static void
fz_pem(const uint8_t *data, size_t size, ngx_uint_t private_key)
{
    EVP_PKEY   *key;
    ngx_str_t   pem;

    /* as the file reader leaves it: NUL-terminated */

    pem.data = ngx_pnalloc(fz_pool(), size + 1);
    ngx_memcpy(pem.data, data, size);
    pem.data[size] = '\0';
    pem.len = size;

    key = ngx_http_paygw_pem_key(&pem, private_key);
    EVP_PKEY_free(key);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                        *rv;
    ngx_str_t                   *args;
    ngx_conf_t                   cf;
    ngx_array_t                  a;
    ngx_http_conf_ctx_t          hctx;
    ngx_http_paygw_main_conf_t   pmcf;
    void                        *mains[1];

    static char *(*readers[])(ngx_conf_t *, ngx_command_t *, void *) = {
        ngx_http_paygw_keys, ngx_http_paygw_policy, ngx_http_paygw_fees,
        ngx_http_paygw_webhook_secrets
    };

    if (size < 1) {
        return 0;
    }

    (void) fz_request(NULL, NULL);

    ngx_memzero(&cf, sizeof(cf));
    ngx_memzero(&pmcf, sizeof(pmcf));
    fz_conf_error[0] = '\0';

    if (ngx_array_init(&pmcf.channels, fz_pool(), 1,
                       sizeof(ngx_http_paygw_channel_t))
        != NGX_OK
        || ngx_array_init(&a, fz_pool(), 2, sizeof(ngx_str_t)) != NGX_OK)
    {
        abort();
    }

    mains[0] = &pmcf;
    hctx.main_conf = mains;
    cf.ctx = &hctx;
    cf.pool = fz_pool();
    cf.temp_pool = fz_pool();
    cf.log = fz_log();
    cf.args = &a;

    fz_write(data + 1, size - 1);

    args = ngx_array_push_n(&a, 2);
    ngx_str_set(&args[0], "paygw_fuzz");
    args[1].data = (u_char *) fz_path;
    args[1].len = ngx_strlen(fz_path);

    switch (data[0] % 7) {

    case 4:
        fz_secret(&cf, data + 1, size - 1);
        break;

    case 5:
    case 6:
        fz_pem(data + 1, size - 1, data[0] % 7 == 6);
        break;

    default:
        rv = readers[data[0] % 7](&cf, NULL, &pmcf);

        if (rv == NGX_CONF_ERROR && fz_conf_error[0] == '\0') {
            fprintf(stderr, "fuzz: a file refused without a message\n");
            abort();
        }
    }

    fz_pool_reset();

    return 0;
}
