
/*
 * paygw: the SQL text sent to the server.
 *
 * Statements are our own constant text with "?" placeholders.  Values
 * are rendered with mysql_real_escape_string(), which knows the
 * connection's character set (utf8mb4) and its NO_BACKSLASH_ESCAPES
 * mode, so input never changes the shape of a statement.
 */


#include "ngx_http_paygw_mysql.h"


ngx_int_t
ngx_http_paygw_sql_render(MYSQL *mysql, ngx_pool_t *pool,
    ngx_http_paygw_sql_stmt_t *stmt, ngx_str_t *out)
{
    u_char                      *p, *s, *end, quote;
    size_t                       len;
    ngx_uint_t                   i, n;
    ngx_http_paygw_sql_param_t  *param;

    param = stmt->params.elts;

    /* the worst case: every byte escaped, plus quotes */

    len = stmt->sql.len + 1;

    for (i = 0; i < stmt->params.nelts; i++) {
        len += (param[i].type == NGX_HTTP_PAYGW_SQL_STR)
               ? 2 * param[i].str.len + 2 : NGX_INT64_LEN + 4;
    }

    out->data = ngx_pnalloc(pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = out->data;
    s = stmt->sql.data;
    end = s + stmt->sql.len;
    n = 0;
    quote = 0;

    for ( /* void */ ; s < end; s++) {

        /* a "?" inside a quoted literal or identifier is just text */

        if (quote) {
            if (*s == quote) {
                quote = 0;

            } else if (*s == '\\' && quote != '`' && s + 1 < end) {
                *p++ = *s++;
            }

            *p++ = *s;
            continue;
        }

        if (*s == '\'' || *s == '"' || *s == '`') {
            quote = *s;
            *p++ = *s;
            continue;
        }

        if (*s == ';') {
            /* one statement per text: a batch is built by the driver */
            return NGX_ERROR;
        }

        if (*s != '?') {
            *p++ = *s;
            continue;
        }

        if (n == stmt->params.nelts) {
            return NGX_ERROR;
        }

        switch (param[n].type) {

        case NGX_HTTP_PAYGW_SQL_INT:
            p = ngx_sprintf(p, "%L", param[n].num);
            break;

        case NGX_HTTP_PAYGW_SQL_STR:
            *p++ = '\'';
            p += mysql_real_escape_string(mysql, (char *) p,
                                          (char *) param[n].str.data,
                                          param[n].str.len);
            *p++ = '\'';
            break;

        default: /* NGX_HTTP_PAYGW_SQL_NULL */
            p = ngx_cpymem(p, "NULL", 4);
        }

        n++;
    }

    if (n != stmt->params.nelts) {
        return NGX_ERROR;
    }

    *p = '\0';
    out->len = p - out->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_paygw_sql_store_result(MYSQL_RES *res, ngx_pool_t *pool,
    ngx_http_paygw_sql_stmt_t *stmt)
{
    ngx_str_t      *v, name;
    MYSQL_ROW       row;
    ngx_uint_t      i;
    MYSQL_FIELD    *field;
    unsigned long  *lengths;

    stmt->nfields = mysql_num_fields(res);
    stmt->nrows = (ngx_uint_t) mysql_num_rows(res);

    stmt->fields = ngx_palloc(pool, stmt->nfields * sizeof(ngx_str_t) + 1);
    stmt->values = ngx_palloc(pool, stmt->nrows * stmt->nfields
                                    * sizeof(ngx_str_t) + 1);
    if (stmt->fields == NULL || stmt->values == NULL) {
        return NGX_ERROR;
    }

    field = mysql_fetch_fields(res);

    for (i = 0; i < stmt->nfields; i++) {
        name.len = ngx_strlen(field[i].name);
        name.data = (u_char *) field[i].name;

        stmt->fields[i].len = name.len;
        stmt->fields[i].data = ngx_pstrdup(pool, &name);
        if (stmt->fields[i].data == NULL) {
            return NGX_ERROR;
        }
    }

    /* a stored result is in client memory: fetching does no I/O */

    v = stmt->values;

    while ((row = mysql_fetch_row(res)) != NULL) {

        lengths = mysql_fetch_lengths(res);

        for (i = 0; i < stmt->nfields; i++, v++) {

            if (row[i] == NULL) {
                ngx_str_null(v);
                continue;
            }

            v->len = lengths[i];
            v->data = ngx_pnalloc(pool, v->len + 1);
            if (v->data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(v->data, row[i], v->len);
            v->data[v->len] = '\0';
        }
    }

    return NGX_OK;
}


/*
 * An op's statements as one multi-statement text, one round trip:
 * [START TRANSACTION;] s1; [guard;] s2; ... [; COMMIT].  The server runs
 * them in order and stops at the first error, so a statement that must
 * affect N rows is followed by a guard that fails when it did not: what
 * follows it, COMMIT included, never runs and the driver rolls back.
 * The guard's error is "BIGINT UNSIGNED value is out of range" (1690,
 * in every sql_mode): ROW_COUNT() is at least -1, so the sum overflows
 * whenever it is computed, and it is computed only in the branch IF()
 * picks (SET evaluates it, DO does not).  It used to be a subquery
 * returning two rows (1242), which cost MariaDB a subquery's preparation
 * in every settle, ~25 us of its CPU per create (issue 15).  ROW_COUNT()
 * counts found rows like the affected rows the driver checks
 * (CLIENT_FOUND_ROWS).  Each statement ends with a newline before its
 * ";", so that no trailing comment in our text can hide the next one.
 */

#define NGX_HTTP_PAYGW_SQL_GUARD                                              \
    "SET @paygw_guard = IF(ROW_COUNT() = %L, 0, ~0 + (ROW_COUNT() + 2))"


ngx_int_t
ngx_http_paygw_sql_render_batch(MYSQL *mysql, ngx_pool_t *pool,
    ngx_array_t *stmts, ngx_uint_t transaction, ngx_uint_t *failed,
    ngx_str_t *out)
{
    u_char                     *p;
    size_t                      len;
    ngx_str_t                  *text;
    ngx_uint_t                  i;
    ngx_http_paygw_sql_stmt_t  *stmt;

    text = ngx_palloc(pool, stmts->nelts * sizeof(ngx_str_t));
    if (text == NULL) {
        return NGX_ERROR;
    }

    stmt = stmts->elts;
    len = sizeof("START TRANSACTION;COMMIT");

    for (i = 0; i < stmts->nelts; i++) {
        if (ngx_http_paygw_sql_render(mysql, pool, &stmt[i], &text[i])
            != NGX_OK)
        {
            *failed = i;
            return NGX_DECLINED;
        }

        len += text[i].len + 2
               + sizeof(NGX_HTTP_PAYGW_SQL_GUARD) + NGX_INT64_LEN + 2;
    }

    out->data = ngx_pnalloc(pool, len);
    if (out->data == NULL) {
        return NGX_ERROR;
    }

    p = out->data;

    if (transaction) {
        p = ngx_cpymem(p, "START TRANSACTION;", sizeof("START TRANSACTION;")
                                                - 1);
    }

    for (i = 0; i < stmts->nelts; i++) {
        p = ngx_cpymem(p, text[i].data, text[i].len);
        *p++ = '\n';
        *p++ = ';';

        if (stmt[i].expect_affected != NGX_HTTP_PAYGW_ANY_ROWS) {
            p = ngx_sprintf(p, NGX_HTTP_PAYGW_SQL_GUARD ";",
                            (int64_t) stmt[i].expect_affected);
        }
    }

    if (transaction) {
        p = ngx_cpymem(p, "COMMIT", sizeof("COMMIT") - 1);

    } else {
        p--;    /* the last ";" */
    }

    *p = '\0';
    out->len = p - out->data;

    return NGX_OK;
}
