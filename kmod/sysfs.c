// SPDX-License-Identifier: GPL-2.0
/*
 * pvkexec: /sys/kernel/kexec_loaded and /sys/kernel/kexec_crash_loaded.
 *
 * Linux's own files read Linux's own kexec images, which a Xen PV domain never
 * holds: no crashkernel= memory is reserved under PV, and kexec_load(2) oopses
 * there (machine_kexec_prepare's identity map, measured on Debian's 6.1). Yet
 * systemctl kexec starts only when kexec_loaded reads 1, and kdump-tools reads
 * kexec_crash_loaded for its status. While the module is loaded, both files
 * are the module's and say whether pvkexec holds a kexec image and an armed
 * crash kernel. Once it is removed they are gone until the next boot: the
 * kernel's show functions cannot be put back.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/kobject.h>
#include <linux/sysfs.h>

#include "pvkexec.h"

static ssize_t kexec_loaded_show(struct kobject *kobj,
				 struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", !!READ_ONCE(loaded));
}

static ssize_t kexec_crash_loaded_show(struct kobject *kobj,
				       struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", crash_is_armed());
}

static struct kobj_attribute loaded_attr =
	__ATTR(kexec_loaded, 0444, kexec_loaded_show, NULL);
static struct kobj_attribute crash_loaded_attr =
	__ATTR(kexec_crash_loaded, 0444, kexec_crash_loaded_show, NULL);
static struct attribute *flag_attrs[] = {
	&loaded_attr.attr, &crash_loaded_attr.attr, NULL
};

/* Removes the kernel's file of that name (sysfs matches by name) and adds ours. */
static int take_over(struct attribute *attr)
{
	int ret;

	sysfs_remove_file(kernel_kobj, attr);
	ret = sysfs_create_file(kernel_kobj, attr);
	if (ret)
		pr_err("cannot create /sys/kernel/%s: %d\n", attr->name, ret);
	return ret;
}

int kexec_flags_register(void)
{
	int i, ret;

	for (i = 0; flag_attrs[i]; i++) {
		ret = take_over(flag_attrs[i]);
		if (ret) {
			while (--i >= 0)
				sysfs_remove_file(kernel_kobj, flag_attrs[i]);
			return ret;
		}
	}
	return 0;
}

void kexec_flags_unregister(void)
{
	int i;

	for (i = 0; flag_attrs[i]; i++)
		sysfs_remove_file(kernel_kobj, flag_attrs[i]);
}
