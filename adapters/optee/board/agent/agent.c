/*
 * ebcc-optee-agent: the EBCC board agent. It runs in the REE (normal-world Linux) of an OP-TEE board and
 * relays stage requests from the EBCC host to Trusted Applications through the Linux TEE subsystem
 * (/dev/tee0, raw ioctls from <linux/tee.h>; no libteec, so it links statically).
 *
 * It speaks the length-prefixed protocol of docs/optee-agent-protocol.md on one byte stream: a
 * virtio-serial port (default: the port named org.ebcc.agent) or stdin/stdout with --stdio.
 *
 * The agent is REE code: it sees every request and response byte it relays. It never holds a key: the
 * evidence key lives in the attestation TA's secure storage, and stage secrets (e.g. the order-signing
 * key) live in their TA. A stage whose requests are confidential must encrypt them to the TA.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/tee.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC 0x45424131u /* "EBA1" */
#define MAX_FRAME (16u * 1024 * 1024)
#define MAX_SESSIONS 256
#define TA_DIR "/lib/optee_armtz"

enum { OP_HELLO = 1, OP_INSTALL = 2, OP_OPEN = 3, OP_INVOKE = 4, OP_CLOSE = 5 };
enum { ST_OK = 0, ST_TEE = 1, ST_AGENT = 2 };
/* TEEC origins and codes the agent itself reports */
#define ORIGIN_API 1
#define ORIGIN_COMMS 2
#define TEEC_ERROR_COMMUNICATION 0xFFFF000Eu
#define TEEC_ERROR_ITEM_NOT_FOUND 0xFFFF0008u

static int in_fd = 0, out_fd = 1, tee_fd = -1;
static uint32_t sessions[MAX_SESSIONS];
static int nsessions;

static uint32_t get32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static void put32(uint8_t *p, uint32_t v) {
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static int read_full(int fd, void *buf, size_t n) {
  uint8_t *p = buf;
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r; n -= (size_t)r;
  }
  return 0;
}
static int write_full(int fd, const void *buf, size_t n) {
  const uint8_t *p = buf;
  while (n) {
    ssize_t r = write(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r; n -= (size_t)r;
  }
  return 0;
}

/* Reads one frame; resynchronises on the magic after garbage (e.g. a host that went away mid-frame). */
static uint8_t *read_frame(uint32_t *len) {
  uint8_t hdr[8];
  if (read_full(in_fd, hdr, 4)) return NULL;
  while (get32(hdr) != MAGIC) {
    memmove(hdr, hdr + 1, 3);
    if (read_full(in_fd, hdr + 3, 1)) return NULL;
  }
  if (read_full(in_fd, hdr + 4, 4)) return NULL;
  *len = get32(hdr + 4);
  if (*len > MAX_FRAME) { *len = 0; return calloc(1, 1); }
  uint8_t *body = malloc(*len ? *len : 1);
  if (!body || read_full(in_fd, body, *len)) { free(body); return NULL; }
  return body;
}

static void reply(uint8_t status, uint32_t ret, uint32_t origin, const uint8_t *payload, uint32_t n) {
  uint8_t hdr[8 + 9];
  put32(hdr, MAGIC);
  put32(hdr + 4, 9 + n);
  hdr[8] = status;
  put32(hdr + 9, ret);
  put32(hdr + 13, origin);
  if (write_full(out_fd, hdr, sizeof hdr) || (n && write_full(out_fd, payload, n))) exit(3);
}
static void fail(uint32_t ret, uint32_t origin, const char *msg) {
  reply(ST_AGENT, ret, origin, (const uint8_t *)msg, (uint32_t)strlen(msg));
}

static int supplicant_running(void) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int found = 0;
  if (!d) return 0;
  while (!found && (e = readdir(d))) {
    char path[300], stat[512] = {0};
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    /* /proc/PID/stat is "pid (comm) state ...": a killed supplicant not yet reaped is a zombie (Z). */
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(stat, sizeof stat, f) && strstr(stat, "(tee-supplicant)")) {
      char *end = strrchr(stat, ')');
      if (end && end[1] == ' ' && end[2] != 'Z' && end[2] != 'X') found = 1;
    }
    fclose(f);
  }
  closedir(d);
  return found;
}

static void forget(uint32_t s) {
  for (int i = 0; i < nsessions; i++)
    if (sessions[i] == s) { sessions[i] = sessions[--nsessions]; return; }
}
static void close_session(uint32_t s) {
  struct tee_ioctl_close_session_arg c = { .session = s };
  ioctl(tee_fd, TEE_IOC_CLOSE_SESSION, &c);
  forget(s);
}

static void op_hello(void) {
  /* A new host connection: sessions of an earlier host are closed, so none leak across restarts. */
  while (nsessions) close_session(sessions[nsessions - 1]);
  struct tee_ioctl_version_data v = {0};
  if (ioctl(tee_fd, TEE_IOC_VERSION, &v)) return fail(TEEC_ERROR_COMMUNICATION, ORIGIN_API, "TEE_IOC_VERSION failed");
  char text[256];
  int n = snprintf(text, sizeof text,
                   "{\"agent\":\"ebcc-optee-agent/1\",\"implId\":%u,\"implCaps\":%u,\"genCaps\":%u,\"supplicant\":%s}",
                   v.impl_id, v.impl_caps, v.gen_caps, supplicant_running() ? "true" : "false");
  reply(ST_OK, 0, 0, (const uint8_t *)text, (uint32_t)n);
}

static void uuid_text(const uint8_t *u, char *out) {
  sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2], u[3], u[4],
          u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

static void op_install(const uint8_t *b, uint32_t n) {
  if (n < 16 + 1) return fail(0, 0, "INSTALL needs a UUID and a .ta image");
  char uuid[40], path[128], tmp[140];
  uuid_text(b, uuid);
  snprintf(path, sizeof path, "%s/%s.ta", TA_DIR, uuid);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  mkdir(TA_DIR, 0755);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0444);
  if (fd < 0 || write_full(fd, b + 16, n - 16) || fsync(fd) || close(fd) || rename(tmp, path)) {
    if (fd >= 0) close(fd);
    unlink(tmp);
    return fail(0, 0, "cannot write the TA image");
  }
  reply(ST_OK, 0, 0, NULL, 0);
}

static void op_open(const uint8_t *b, uint32_t n) {
  if (n != 16) return fail(0, 0, "OPEN needs a 16-byte UUID");
  if (!supplicant_running()) return fail(TEEC_ERROR_COMMUNICATION, ORIGIN_COMMS, "tee-supplicant is not running");
  if (nsessions == MAX_SESSIONS) return fail(0, 0, "too many open sessions");
  uint8_t buf[sizeof(struct tee_ioctl_open_session_arg) + 4 * sizeof(struct tee_ioctl_param)] = {0};
  struct tee_ioctl_open_session_arg *arg = (void *)buf;
  memcpy(arg->uuid, b, 16);
  arg->clnt_login = TEE_IOCTL_LOGIN_PUBLIC;
  arg->num_params = 4;
  struct tee_ioctl_buf_data data = { .buf_ptr = (uintptr_t)buf, .buf_len = sizeof buf };
  if (ioctl(tee_fd, TEE_IOC_OPEN_SESSION, &data)) return fail(TEEC_ERROR_COMMUNICATION, ORIGIN_API, "TEE_IOC_OPEN_SESSION failed");
  if (arg->ret) return reply(ST_TEE, arg->ret, arg->ret_origin, NULL, 0);
  sessions[nsessions++] = arg->session;
  uint8_t out[4];
  put32(out, arg->session);
  reply(ST_OK, 0, 0, out, 4);
}

static int known(uint32_t s) {
  for (int i = 0; i < nsessions; i++)
    if (sessions[i] == s) return 1;
  return 0;
}

/* INVOKE: session, func, out0 capacity, out1 capacity, in0 (len + bytes), in1 (len + bytes). */
static void op_invoke(const uint8_t *b, uint32_t n) {
  if (n < 24) return fail(0, 0, "INVOKE is too short");
  uint32_t session = get32(b), func = get32(b + 4), cap0 = get32(b + 8), cap1 = get32(b + 12);
  uint32_t len0 = get32(b + 16);
  if (len0 > n - 24) return fail(0, 0, "INVOKE input 0 overruns the frame");
  uint32_t len1 = get32(b + 20 + len0);
  if (len1 != n - 24 - len0) return fail(0, 0, "INVOKE input 1 does not match the frame");
  if (!known(session)) return fail(TEEC_ERROR_ITEM_NOT_FOUND, ORIGIN_API, "no such session");
  if (cap0 > MAX_FRAME || cap1 > MAX_FRAME) return fail(0, 0, "INVOKE output capacity too large");
  const uint8_t *in0 = b + 20, *in1 = b + 24 + len0;
  uint64_t page = 4096, total = 0, off[4], size[4] = { len0, len1, cap0, cap1 };
  for (int i = 0; i < 4; i++) { off[i] = total; total += (size[i] + page - 1) / page * page + page; }
  struct tee_ioctl_shm_alloc_data shm = { .size = total };
  int shm_fd = ioctl(tee_fd, TEE_IOC_SHM_ALLOC, &shm);
  if (shm_fd < 0) return fail(TEEC_ERROR_COMMUNICATION, ORIGIN_API, "TEE_IOC_SHM_ALLOC failed");
  uint8_t *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
  if (mem == MAP_FAILED) { close(shm_fd); return fail(TEEC_ERROR_COMMUNICATION, ORIGIN_API, "mmap of shared memory failed"); }
  memcpy(mem + off[0], in0, len0);
  memcpy(mem + off[1], in1, len1);
  uint8_t buf[sizeof(struct tee_ioctl_invoke_arg) + 4 * sizeof(struct tee_ioctl_param)] = {0};
  struct tee_ioctl_invoke_arg *arg = (void *)buf;
  arg->func = func;
  arg->session = session;
  arg->num_params = 4;
  uint64_t types[4] = { TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_INPUT, TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_INPUT,
                        TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_OUTPUT, TEE_IOCTL_PARAM_ATTR_TYPE_MEMREF_OUTPUT };
  for (int i = 0; i < 4; i++) {
    arg->params[i].attr = types[i];
    arg->params[i].a = off[i];
    arg->params[i].b = size[i];
    arg->params[i].c = (uint64_t)shm.id;
  }
  struct tee_ioctl_buf_data data = { .buf_ptr = (uintptr_t)buf, .buf_len = sizeof buf };
  int rc = ioctl(tee_fd, TEE_IOC_INVOKE, &data);
  if (rc) {
    munmap(mem, total); close(shm_fd);
    return fail(TEEC_ERROR_COMMUNICATION, ORIGIN_API, "TEE_IOC_INVOKE failed");
  }
  uint64_t out0 = arg->params[2].b, out1 = arg->params[3].b;
  /* On TEE_ERROR_SHORT_BUFFER the sizes say what the TA needed: reported, nothing copied. */
  uint32_t copy0 = arg->ret == 0 && out0 <= cap0 ? (uint32_t)out0 : 0;
  uint32_t copy1 = arg->ret == 0 && out1 <= cap1 ? (uint32_t)out1 : 0;
  uint8_t *payload = malloc(16 + copy0 + copy1);
  if (!payload) exit(4);
  put32(payload, (uint32_t)out0);
  put32(payload + 4, (uint32_t)out1);
  put32(payload + 8, copy0);
  memcpy(payload + 12, mem + off[2], copy0);
  put32(payload + 12 + copy0, copy1);
  memcpy(payload + 16 + copy0, mem + off[3], copy1);
  reply(arg->ret ? ST_TEE : ST_OK, arg->ret, arg->ret_origin, payload, 16 + copy0 + copy1);
  free(payload);
  munmap(mem, total);
  close(shm_fd);
  /* A TA that panicked is dead: its session is gone in the TEE too. */
  if (arg->ret_origin == 3 /* TEEC_ORIGIN_TEE */ && arg->ret == 0xFFFF3024u /* TARGET_DEAD */) forget(session);
}

static void op_close(const uint8_t *b, uint32_t n) {
  if (n != 4) return fail(0, 0, "CLOSE needs a session");
  uint32_t s = get32(b);
  if (!known(s)) return fail(TEEC_ERROR_ITEM_NOT_FOUND, ORIGIN_API, "no such session");
  close_session(s);
  reply(ST_OK, 0, 0, NULL, 0);
}

static int open_port(const char *name) {
  /* virtio-serial ports appear as /dev/vportNpM; their names are in /sys/class/virtio-ports. */
  for (int attempt = 0; attempt < 100; attempt++) {
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    while (d && (e = readdir(d))) {
      char path[300], got[128] = {0};
      if (e->d_name[0] == '.') continue;
      snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
      FILE *f = fopen(path, "r");
      if (!f) continue;
      if (fgets(got, sizeof got, f)) got[strcspn(got, "\n")] = 0;
      fclose(f);
      if (strcmp(got, name) == 0) {
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        closedir(d);
        return open(path, O_RDWR);
      }
    }
    if (d) closedir(d);
    usleep(100000);
  }
  return -1;
}

int main(int argc, char **argv) {
  const char *port = "org.ebcc.agent";
  int stdio = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--stdio") == 0) stdio = 1;
    else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) port = argv[++i];
    else { fprintf(stderr, "usage: %s [--stdio | --port NAME]\n", argv[0]); return 2; }
  }
  tee_fd = open("/dev/tee0", O_RDWR);
  if (tee_fd < 0) { perror("ebcc-optee-agent: /dev/tee0"); return 1; }
  if (!stdio) {
    int fd = open_port(port);
    if (fd < 0) { fprintf(stderr, "ebcc-optee-agent: no virtio-serial port %s\n", port); return 1; }
    in_fd = out_fd = fd;
  }
  fprintf(stderr, "ebcc-optee-agent: ready\n");
  for (;;) {
    uint32_t n;
    uint8_t *body = read_frame(&n);
    if (!body) {
      if (stdio) return 0;
      usleep(50000); /* the host side closed the port: wait for the next host */
      continue;
    }
    if (n == 0) fail(0, 0, "empty or oversized frame");
    else switch (body[0]) {
      case OP_HELLO: op_hello(); break;
      case OP_INSTALL: op_install(body + 1, n - 1); break;
      case OP_OPEN: op_open(body + 1, n - 1); break;
      case OP_INVOKE: op_invoke(body + 1, n - 1); break;
      case OP_CLOSE: op_close(body + 1, n - 1); break;
      default: fail(0, 0, "unknown operation");
    }
    free(body);
  }
}
