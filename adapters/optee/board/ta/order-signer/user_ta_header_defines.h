#ifndef USER_TA_HEADER_DEFINES_H
#define USER_TA_HEADER_DEFINES_H
#include "ebcc_ta.h"
/* 8d0c5a4e-3f61-4b2a-a7c9-1e5f2b6d9c30 */
#define TA_UUID { 0x8d0c5a4e, 0x3f61, 0x4b2a, { 0xa7, 0xc9, 0x1e, 0x5f, 0x2b, 0x6d, 0x9c, 0x30 } }
#define TA_FLAGS (TA_FLAG_MULTI_SESSION)
#define TA_STACK_SIZE (8 * 1024)
#define TA_DATA_SIZE (64 * 1024)
#define TA_VERSION "1.0"
#define TA_DESCRIPTION "EBCC sample stage: signs orders with a P-256 key that never leaves the secure world"
#endif
