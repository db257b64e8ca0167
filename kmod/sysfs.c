// SPDX-License-Identifier: GPL-2.0
/*
 * pvkexec: /sys/kernel/kexec_loaded and kexec_crash_loaded.
 *
 * Linux's own file reads Linux's own kexec image, which a Xen PV domain never
 * holds: kexec_load(2) oopses there (machine_kexec_prepare's identity map,
 * measured on Debian's 6.1). Yet systemctl kexec starts only when it reads 1.
 * While the module is loaded the file is the module's and says whether
 * pvkexec holds a kexec image; once it is removed the file is gone until the
 * next boot (the kernel's show function cannot be put back).
 *
 * kexec_crash_loaded reads 1 only while a Linux crash kernel is armed, the
 * one kdump-tools loads (kexec -p): its udev rule reloads "its" crash kernel
 * whenever that file reads 1 (kdump-config try-reload: unload, then load),
 * which would unload pvkexec's capture kernel, so that one reads 0.
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

static struct kobj_attribute loaded_attr =
	__ATTR(kexec_loaded, 0444, kexec_loaded_show, NULL);

static ssize_t kexec_crash_loaded_show(struct kobject *kobj,
				       struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", crash_linux_armed());
}

static struct kobj_attribute crash_loaded_attr =
	__ATTR(kexec_crash_loaded, 0444, kexec_crash_loaded_show, NULL);

/* Removes the kernel's file of that name (sysfs matches by name), adds ours. */
int kexec_flags_register(void)
{
	int ret;

	sysfs_remove_file(kernel_kobj, &loaded_attr.attr);
	ret = sysfs_create_file(kernel_kobj, &loaded_attr.attr);
	if (ret) {
		pr_err("cannot create /sys/kernel/kexec_loaded: %d\n", ret);
		return ret;
	}
	sysfs_remove_file(kernel_kobj, &crash_loaded_attr.attr);
	ret = sysfs_create_file(kernel_kobj, &crash_loaded_attr.attr);
	if (ret) {
		pr_err("cannot create /sys/kernel/kexec_crash_loaded: %d\n", ret);
		sysfs_remove_file(kernel_kobj, &loaded_attr.attr);
	}
	return ret;
}

void kexec_flags_unregister(void)
{
	sysfs_remove_file(kernel_kobj, &crash_loaded_attr.attr);
	sysfs_remove_file(kernel_kobj, &loaded_attr.attr);
}
