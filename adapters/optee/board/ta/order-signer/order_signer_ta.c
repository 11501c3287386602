/*
 * The order-signer stage as a Trusted Application. It signs the exact request bytes (the canonical order
 * the anchor sends) with an ECDSA P-256 key generated in the secure world and kept in secure storage, and
 * answers {"alg","digest","signature","publicKey"} as JSON. (It builds the JSON by hand: a TA calling the
 * dev kit's snprintf, built with bookworm's aarch64 gcc 12, hung the whole emulated board.) Every execution is attested: the attestation
 * TA signs the digests of the request and the response, computed here, under this TA's identity.
 */
#include <string.h>
#include <tee_internal_api.h>
#include "ebcc_ta.h"

struct session {
  uint32_t seq;
};

static TEE_ObjectHandle key = TEE_HANDLE_NULL;

TEE_Result TA_CreateEntryPoint(void) { return TEE_SUCCESS; }
void TA_DestroyEntryPoint(void) {}
TEE_Result TA_OpenSessionEntryPoint(uint32_t types, TEE_Param params[4], void **ctx) {
  (void)types; (void)params;
  struct session *s = TEE_Malloc(sizeof *s, TEE_MALLOC_FILL_ZERO);
  if (!s) return TEE_ERROR_OUT_OF_MEMORY;
  *ctx = s;
  return TEE_SUCCESS;
}
void TA_CloseSessionEntryPoint(void *ctx) { TEE_Free(ctx); }

static void hex(const uint8_t *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * n] = 0;
}

static TEE_Result run(struct session *s, uint32_t types, TEE_Param p[4]) {
  uint32_t want = TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_MEMREF_INPUT,
                                  TEE_PARAM_TYPE_MEMREF_OUTPUT, TEE_PARAM_TYPE_MEMREF_OUTPUT);
  uint8_t digest[32], signature[64], public_key[65];
  char digest_hex[65], signature_hex[129], public_hex[131], response[400];
  size_t sig_len = sizeof signature;
  TEE_OperationHandle op = TEE_HANDLE_NULL;
  TEE_Result res;

  if (types != want || p[1].memref.size != 32) return TEE_ERROR_BAD_PARAMETERS;
  if (p[0].memref.size == 0) return TEE_ERROR_BAD_FORMAT;
  if (key == TEE_HANDLE_NULL) {
    res = ebcc_persistent_p256("order-signing-key", &key);
    if (res != TEE_SUCCESS) return res;
  }
  res = ebcc_sha256(p[0].memref.buffer, p[0].memref.size, digest);
  if (res == TEE_SUCCESS) res = TEE_AllocateOperation(&op, TEE_ALG_ECDSA_SHA256, TEE_MODE_SIGN, 256);
  if (res == TEE_SUCCESS) res = TEE_SetOperationKey(op, key);
  if (res == TEE_SUCCESS) res = TEE_AsymmetricSignDigest(op, NULL, 0, digest, 32, signature, &sig_len);
  if (op != TEE_HANDLE_NULL) TEE_FreeOperation(op);
  if (res == TEE_SUCCESS) res = ebcc_p256_public(key, public_key);
  if (res != TEE_SUCCESS) return res;
  hex(digest, 32, digest_hex);
  hex(signature, sig_len, signature_hex);
  hex(public_key, 65, public_hex);
  size_t n = 0;
  const char *parts[] = { "{\"alg\":\"ES256\",\"digest\":\"", digest_hex, "\",\"signature\":\"", signature_hex,
                          "\",\"publicKey\":\"", public_hex, "\"}" };
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    size_t len = strlen(parts[i]);
    if (n + len > sizeof response) return TEE_ERROR_GENERIC;
    memcpy(response + n, parts[i], len);
    n += len;
  }
  if (p[2].memref.size < n || p[3].memref.size < EBCC_EVIDENCE_LEN) {
    p[2].memref.size = n;
    p[3].memref.size = EBCC_EVIDENCE_LEN;
    return TEE_ERROR_SHORT_BUFFER;
  }
  memcpy(p[2].memref.buffer, response, n);
  p[2].memref.size = n;
  res = ebcc_attest_execution(s->seq + 1, p[0].memref.buffer, p[0].memref.size, response, n, p[1].memref.buffer,
                              p[3].memref.buffer);
  if (res != TEE_SUCCESS) return res;
  s->seq++;
  p[3].memref.size = EBCC_EVIDENCE_LEN;
  return TEE_SUCCESS;
}

TEE_Result TA_InvokeCommandEntryPoint(void *ctx, uint32_t cmd, uint32_t types, TEE_Param params[4]) {
  if (cmd == EBCC_CMD_RUN) return run(ctx, types, params);
  return TEE_ERROR_NOT_SUPPORTED;
}
