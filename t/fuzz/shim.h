#ifndef _PAYGW_FUZZ_SHIM_H_INCLUDED_
#define _PAYGW_FUZZ_SHIM_H_INCLUDED_

void fz_pool_reset(void);

#endif
