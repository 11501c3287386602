/*
 * The EBCC attestation TA. Its ECDSA P-256 key is generated here, in the secure world, on first use and
 * kept in OP-TEE secure storage; the REE only ever gets the public key. It signs payloads for other TAs
 * only, and always binds the caller's identity as the TEE reports it (gpd.client.identity of a
 * TEE_LOGIN_TRUSTED_APP client), so no normal-world process can obtain a signature in a stage's name.
 */
#include <string.h>
#include <tee_internal_api.h>
#include "ebcc_ta.h"

static TEE_ObjectHandle key = TEE_HANDLE_NULL;

static TEE_Result load_key(void) {
  if (key != TEE_HANDLE_NULL) return TEE_SUCCESS;
  return ebcc_persistent_p256("ebcc-attestation-key", &key);
}

TEE_Result TA_CreateEntryPoint(void) { return TEE_SUCCESS; }
void TA_DestroyEntryPoint(void) {}
TEE_Result TA_OpenSessionEntryPoint(uint32_t types, TEE_Param params[4], void **ctx) {
  (void)types; (void)params; (void)ctx;
  return TEE_SUCCESS;
}
void TA_CloseSessionEntryPoint(void *ctx) { (void)ctx; }

static TEE_Result sign(uint32_t types, TEE_Param params[4]) {
  TEE_Identity caller;
  TEE_OperationHandle op = TEE_HANDLE_NULL;
  uint8_t message[sizeof(EBCC_EVIDENCE_LABEL) + 16 + EBCC_MAX_PAYLOAD];
  uint8_t digest[32];
  size_t sig_len = 64;
  TEE_Result res;

  if (TEE_PARAM_TYPE_GET(types, 0) != TEE_PARAM_TYPE_MEMREF_INPUT ||
      TEE_PARAM_TYPE_GET(types, 2) != TEE_PARAM_TYPE_MEMREF_OUTPUT)
    return TEE_ERROR_BAD_PARAMETERS;
  res = TEE_GetPropertyAsIdentity(TEE_PROPSET_CURRENT_CLIENT, "gpd.client.identity", &caller);
  if (res != TEE_SUCCESS) return res;
  if (caller.login != TEE_LOGIN_TRUSTED_APP) return TEE_ERROR_ACCESS_DENIED;
  size_t n = params[0].memref.size;
  if (n > EBCC_MAX_PAYLOAD) return TEE_ERROR_BAD_PARAMETERS;
  if (params[2].memref.size < 64) {
    params[2].memref.size = 64;
    return TEE_ERROR_SHORT_BUFFER;
  }
  /* label incl. its NUL, then the caller UUID in RFC 4122 byte order, then the payload */
  size_t at = sizeof(EBCC_EVIDENCE_LABEL);
  memcpy(message, EBCC_EVIDENCE_LABEL, at);
  const TEE_UUID *u = &caller.uuid;
  uint8_t *p = message + at;
  p[0] = u->timeLow >> 24; p[1] = u->timeLow >> 16; p[2] = u->timeLow >> 8; p[3] = u->timeLow;
  p[4] = u->timeMid >> 8; p[5] = u->timeMid; p[6] = u->timeHiAndVersion >> 8; p[7] = u->timeHiAndVersion;
  memcpy(p + 8, u->clockSeqAndNode, 8);
  at += 16;
  memcpy(message + at, params[0].memref.buffer, n);
  at += n;

  res = load_key();
  if (res == TEE_SUCCESS) res = ebcc_sha256(message, at, digest);
  if (res == TEE_SUCCESS) res = TEE_AllocateOperation(&op, TEE_ALG_ECDSA_SHA256, TEE_MODE_SIGN, 256);
  if (res == TEE_SUCCESS) res = TEE_SetOperationKey(op, key);
  if (res == TEE_SUCCESS) res = TEE_AsymmetricSignDigest(op, NULL, 0, digest, 32, params[2].memref.buffer, &sig_len);
  if (op != TEE_HANDLE_NULL) TEE_FreeOperation(op);
  if (res == TEE_SUCCESS) params[2].memref.size = sig_len;
  return res;
}

TEE_Result TA_InvokeCommandEntryPoint(void *ctx, uint32_t cmd, uint32_t types, TEE_Param params[4]) {
  (void)ctx;
  if (cmd == EBCC_ATTEST_CMD_SIGN) return sign(types, params);
  if (cmd == EBCC_ATTEST_CMD_PUBKEY) {
    if (TEE_PARAM_TYPE_GET(types, 2) != TEE_PARAM_TYPE_MEMREF_OUTPUT) return TEE_ERROR_BAD_PARAMETERS;
    if (params[2].memref.size < 65) {
      params[2].memref.size = 65;
      return TEE_ERROR_SHORT_BUFFER;
    }
    TEE_Result res = load_key();
    if (res == TEE_SUCCESS) res = ebcc_p256_public(key, params[2].memref.buffer);
    if (res == TEE_SUCCESS) params[2].memref.size = 65;
    return res;
  }
  return TEE_ERROR_NOT_SUPPORTED;
}
