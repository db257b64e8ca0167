// SPDX-License-Identifier: GPL-2.0
/*
 * pvkexec: /sys/kernel/kexec_loaded.
 *
 * Linux's own file reads Linux's own kexec image, which a Xen PV domain never
 * holds: kexec_load(2) oopses there (machine_kexec_prepare's identity map,
 * measured on Debian's 6.1). Yet systemctl kexec starts only when it reads 1.
 * While the module is loaded the file is the module's and says whether
 * pvkexec holds a kexec image; once it is removed the file is gone until the
 * next boot (the kernel's show function cannot be put back).
 *
 * kexec_crash_loaded stays Linux's (0): kdump-tools' udev rule reloads "its"
 * crash kernel whenever that file reads 1 (kdump-config try-reload: unload,
 * then load), which would unload pvkexec's.
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
static struct attribute *flag_attrs[] = { &loaded_attr.attr, NULL };

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
