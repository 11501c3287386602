CREATE TABLE `data_keys` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant_id` text NOT NULL,
	`kek_id` text NOT NULL,
	`wrapped` blob,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	`shredded_at` integer,
	FOREIGN KEY (`tenant_id`) REFERENCES `tenants`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `data_keys_tenant` ON `data_keys` (`tenant_id`,`shredded_at`);--> statement-breakpoint
ALTER TABLE `stage_executions` ADD `sealed_with` text;--> statement-breakpoint
ALTER TABLE `stage_executions` ADD `sealed` text;--> statement-breakpoint
ALTER TABLE `stage_executions` ADD `pruned_at` integer;