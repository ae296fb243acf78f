/* config.h for Linux/glibc, written by hand in place of autoconf's (the lab
 * host has gcc and make but no autoconf). These are the defines that
 * `autoreconf -ifs && ./configure` produces from configure.ac on Debian
 * (glibc >= 2.32): the *at() family, posix_fallocate, utimensat, lchmod, the
 * st_[amc]tim members and <sys/sysmacros.h>. Not on Linux: bindat,
 * connectat, chflags*, lpathconf, sys/acl.h (FreeBSD), sys/mkdev.h
 * (Solaris), st_birthtim*. HAVE_UNLINKAT is not checked by configure.ac
 * either, so unlinkat stays off as in an autoconf build. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#define HAVE_SYS_SYSMACROS_H 1
#define HAVE_FACCESSAT 1
#define HAVE_FCHMODAT 1
#define HAVE_FCHOWNAT 1
#define HAVE_FSTATAT 1
#define HAVE_LCHMOD 1
#define HAVE_LINKAT 1
#define HAVE_MKDIRAT 1
#define HAVE_MKFIFOAT 1
#define HAVE_MKNODAT 1
#define HAVE_OPENAT 1
#define HAVE_POSIX_FALLOCATE 1
#define HAVE_READLINKAT 1
#define HAVE_RENAMEAT 1
#define HAVE_SYMLINKAT 1
#define HAVE_UTIMENSAT 1
#define HAVE_STRUCT_STAT_ST_ATIM 1
#define HAVE_STRUCT_STAT_ST_CTIM 1
#define HAVE_STRUCT_STAT_ST_MTIM 1
