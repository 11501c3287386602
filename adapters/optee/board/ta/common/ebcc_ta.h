/*
 * Shared by EBCC's Trusted Applications: the UUIDs, the command interface the board agent uses, and the
 * evidence message the attestation TA signs. docs/optee-agent-protocol.md describes the same layout.
 */
#ifndef EBCC_TA_H
#define EBCC_TA_H

#include <tee_internal_api.h>

/* 5f1a0c3e-7b2d-4e8a-9c61-0e2b8d4a7f10 */
#define EBCC_ATTEST_UUID \
  { 0x5f1a0c3e, 0x7b2d, 0x4e8a, { 0x9c, 0x61, 0x0e, 0x2b, 0x8d, 0x4a, 0x7f, 0x10 } }

/*
 * Every EBCC stage TA takes command EBCC_CMD_RUN with four memrefs:
 *   p0 (in)  the request bytes;   p1 (in)  the 32-byte digest of the EBCC context (see the adapter);
 *   p2 (out) the response bytes;  p3 (out) the evidence: seq (u32 BE) || ECDSA P-256 signature (r || s).
 */
#define EBCC_CMD_RUN 0

/* Attestation TA commands, same memref layout. */
#define EBCC_ATTEST_CMD_PUBKEY 0 /* p2: 65-byte uncompressed P-256 public key */
#define EBCC_ATTEST_CMD_SIGN 1   /* p0: payload (<= 256 bytes); p2: 64-byte signature; TA clients only */

/* The attestation TA signs SHA-256( LABEL || 0x00 || caller TA UUID (16 bytes, RFC 4122 order) || payload ). */
#define EBCC_EVIDENCE_LABEL "ebcc-optee-evidence/1"
#define EBCC_MAX_PAYLOAD 256

/* A stage TA's execution payload: "exec" || seq (u32 BE) || SHA-256(request) || SHA-256(response) || context. */
#define EBCC_EXEC_PAYLOAD_LEN (4 + 4 + 32 + 32 + 32)
#define EBCC_EVIDENCE_LEN (4 + 64)

TEE_Result ebcc_sha256(const void *data, size_t len, uint8_t out[32]);
/* Signs an execution with the attestation TA; `evidence` gets seq || signature (EBCC_EVIDENCE_LEN bytes). */
TEE_Result ebcc_attest_execution(uint32_t seq, const void *request, size_t request_len, const void *response,
                                 size_t response_len, const uint8_t context[32], uint8_t *evidence);
/* Fills an ECDSA P-256 key pair kept in secure storage under `id`, generating it on first use. */
TEE_Result ebcc_persistent_p256(const char *id, TEE_ObjectHandle *key);
TEE_Result ebcc_p256_public(TEE_ObjectHandle key, uint8_t out[65]);

#endif
