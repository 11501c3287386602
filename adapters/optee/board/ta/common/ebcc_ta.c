#include <string.h>
#include "ebcc_ta.h"

TEE_Result ebcc_sha256(const void *data, size_t len, uint8_t out[32]) {
  TEE_OperationHandle op = TEE_HANDLE_NULL;
  size_t out_len = 32;
  TEE_Result res = TEE_AllocateOperation(&op, TEE_ALG_SHA256, TEE_MODE_DIGEST, 0);
  if (res != TEE_SUCCESS) return res;
  res = TEE_DigestDoFinal(op, data, len, out, &out_len);
  TEE_FreeOperation(op);
  return res;
}

TEE_Result ebcc_persistent_p256(const char *id, TEE_ObjectHandle *key) {
  uint32_t flags = TEE_DATA_FLAG_ACCESS_READ | TEE_DATA_FLAG_SHARE_READ;
  TEE_Result res = TEE_OpenPersistentObject(TEE_STORAGE_PRIVATE, id, strlen(id), flags, key);
  if (res != TEE_ERROR_ITEM_NOT_FOUND) return res;
  TEE_ObjectHandle fresh = TEE_HANDLE_NULL;
  TEE_Attribute curve;
  res = TEE_AllocateTransientObject(TEE_TYPE_ECDSA_KEYPAIR, 256, &fresh);
  if (res != TEE_SUCCESS) return res;
  TEE_InitValueAttribute(&curve, TEE_ATTR_ECC_CURVE, TEE_ECC_CURVE_NIST_P256, 0);
  res = TEE_GenerateKey(fresh, 256, &curve, 1);
  if (res == TEE_SUCCESS)
    res = TEE_CreatePersistentObject(TEE_STORAGE_PRIVATE, id, strlen(id), flags, fresh, NULL, 0, key);
  TEE_FreeTransientObject(fresh);
  return res;
}

TEE_Result ebcc_p256_public(TEE_ObjectHandle key, uint8_t out[65]) {
  size_t x_len = 32, y_len = 32;
  TEE_Result res;
  out[0] = 0x04;
  res = TEE_GetObjectBufferAttribute(key, TEE_ATTR_ECC_PUBLIC_VALUE_X, out + 1, &x_len);
  if (res == TEE_SUCCESS) res = TEE_GetObjectBufferAttribute(key, TEE_ATTR_ECC_PUBLIC_VALUE_Y, out + 33, &y_len);
  if (res == TEE_SUCCESS && (x_len != 32 || y_len != 32)) res = TEE_ERROR_GENERIC;
  return res;
}

TEE_Result ebcc_attest_execution(uint32_t seq, const void *request, size_t request_len, const void *response,
                                 size_t response_len, const uint8_t context[32], uint8_t *evidence) {
  static const TEE_UUID attest = EBCC_ATTEST_UUID;
  uint8_t payload[EBCC_EXEC_PAYLOAD_LEN];
  TEE_TASessionHandle session = TEE_HANDLE_NULL;
  TEE_Param params[TEE_NUM_PARAMS];
  uint32_t origin = 0;
  TEE_Result res;

  memcpy(payload, "exec", 4);
  payload[4] = seq >> 24; payload[5] = seq >> 16; payload[6] = seq >> 8; payload[7] = seq;
  res = ebcc_sha256(request, request_len, payload + 8);
  if (res == TEE_SUCCESS) res = ebcc_sha256(response, response_len, payload + 40);
  if (res != TEE_SUCCESS) return res;
  memcpy(payload + 72, context, 32);

  uint32_t none = TEE_PARAM_TYPES(TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_NONE);
  memset(params, 0, sizeof params);
  res = TEE_OpenTASession(&attest, TEE_TIMEOUT_INFINITE, none, params, &session, &origin);
  if (res != TEE_SUCCESS) return res;
  memset(params, 0, sizeof params);
  params[0].memref.buffer = payload;
  params[0].memref.size = sizeof payload;
  params[2].memref.buffer = evidence + 4;
  params[2].memref.size = 64;
  uint32_t types = TEE_PARAM_TYPES(TEE_PARAM_TYPE_MEMREF_INPUT, TEE_PARAM_TYPE_NONE, TEE_PARAM_TYPE_MEMREF_OUTPUT,
                                   TEE_PARAM_TYPE_NONE);
  res = TEE_InvokeTACommand(session, TEE_TIMEOUT_INFINITE, EBCC_ATTEST_CMD_SIGN, types, params, &origin);
  TEE_CloseTASession(session);
  if (res == TEE_SUCCESS && params[2].memref.size != 64) res = TEE_ERROR_GENERIC;
  memcpy(evidence, payload + 4, 4);
  return res;
}
