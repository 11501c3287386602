/*
 * A test stage for the failure paths of the OP-TEE backend. The request decides what it does:
 *   "panic"      -> TEE_Panic (the TA dies; the TEE reports TEE_ERROR_TARGET_DEAD)
 *   "error"      -> returns TEE_ERROR_BAD_STATE
 *   "big:<n>"    -> answers n bytes of 'x' (or TEE_ERROR_SHORT_BUFFER with the size it needs)
 *   anything else -> echoes the request, attested like any stage.
 */
#include <string.h>
#include <tee_internal_api.h>
#include "ebcc_ta.h"

static uint32_t seq;

TEE_Result TA_CreateEntryPoint(void) { return TEE_SUCCESS; }
void TA_DestroyEntryPoint(void) {}
TEE_Result TA_OpenSessionEntryPoint(uint32_t types, TEE_Param params[4], void **ctx) {
  (void)types; (void)params; (void)ctx;
  seq = 0;
  return TEE_SUCCESS;
}
void TA_CloseSessionEntryPoint(void *ctx) { (void)ctx; }

static int starts(const TEE_Param *p, const char *word) {
  size_t n = strlen(word);
  return p->memref.size >= n && memcmp(p->memref.buffer, word, n) == 0;
}

TEE_Result TA_InvokeCommandEntryPoint(void *ctx, uint32_t cmd, uint32_t types, TEE_Param p[4]) {
  (void)ctx;
  uint32_t want = TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_MEMREF_INPUT,
                                  TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_MEMREF_OUTPUT);
  if (cmd != EBCC_CMD_RUN) return TEE_ERROR_NOT_SUPPORTED;
  if (types != want || p[1].memref.size != 32) return TEE_ERROR_BAD_PARAMETERS;
  if (starts(&p[0], "panic")) TEE_Panic(0xEBCC);
  if (starts(&p[0], "error")) return TEE_ERROR_BAD_STATE;
  if (starts(&p[0], "big:")) {
    size_t n = 0;
    const char *s = (const char *)p[0].memref.buffer;
    for (size_t i = 4; i < p[0].memref.size && s[i] >= '0' && s[i] <= '9'; i++) n = n * 10 + (size_t)(s[i] - '0');
    if (p[2].memref.size < n) {
      p[2].memref.size = n;
      return TEE_ERROR_SHORT_BUFFER;
    }
    memset(p[2].memref.buffer, 'x', n);
    p[2].memref.size = n;
    p[3].memref.size = 0;
    return TEE_SUCCESS;
  }
  if (p[2].memref.size < p[0].memref.size || p[3].memref.size < EBCC_EVIDENCE_LEN) {
    p[2].memref.size = p[0].memref.size;
    p[3].memref.size = EBCC_EVIDENCE_LEN;
    return TEE_ERROR_SHORT_BUFFER;
  }
  memcpy(p[2].memref.buffer, p[0].memref.buffer, p[0].memref.size);
  p[2].memref.size = p[0].memref.size;
  TEE_Result res = ebcc_attest_execution(seq + 1, p[0].memref.buffer, p[0].memref.size, p[2].memref.buffer,
                                         p[2].memref.size, p[1].memref.buffer, p[3].memref.buffer);
  if (res != TEE_SUCCESS) return res;
  seq++;
  p[3].memref.size = EBCC_EVIDENCE_LEN;
  return TEE_SUCCESS;
}
