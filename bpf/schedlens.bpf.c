// placeholder so the skeleton builds while the recorder is written
typedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32; typedef unsigned long long __u64;
typedef signed char __s8; typedef short __s16; typedef int __s32; typedef long long __s64;
typedef __u16 __be16; typedef __u32 __be32; typedef __u32 __wsum;
enum bpf_map_type { BPF_MAP_TYPE_RINGBUF = 27 };
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
