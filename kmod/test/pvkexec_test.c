// SPDX-License-Identifier: GPL-2.0
/*
 * pvkexec_test: the test-only ioctls of /dev/pvkexec (pvkexec.ko loaded with
 * fault_injection=1), for the QEMU tests. Static binary, no library needed.
 *   pvkexec_test corrupt   flip a byte of the loaded crash image's kernel
 *   pvkexec_test park      park CPU 1 with interrupts off
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../pvkexec_uapi.h"

int main(int argc, char **argv)
{
	unsigned long cmd;
	int fd;

	if (argc == 2 && !strcmp(argv[1], "corrupt")) {
		cmd = PVKEXEC_IOC_TEST_CORRUPT_CRASH;
	} else if (argc == 2 && !strcmp(argv[1], "park")) {
		cmd = PVKEXEC_IOC_TEST_PARK_CPU1;
	} else {
		fprintf(stderr, "usage: %s corrupt|park\n", argv[0]);
		return 2;
	}
	fd = open("/dev/pvkexec", O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "/dev/pvkexec: %s\n", strerror(errno));
		return 1;
	}
	if (ioctl(fd, cmd)) {
		fprintf(stderr, "%s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	printf("%s: done\n", argv[1]);
	return close(fd) ? 1 : 0;
}
