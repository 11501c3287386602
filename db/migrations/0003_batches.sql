CREATE TABLE `batch_items` (
	`id` text PRIMARY KEY NOT NULL,
	`batch_id` text,
	`seq` integer NOT NULL,
	`tenant_id` text NOT NULL,
	`function_id` text NOT NULL,
	`function_name` text NOT NULL,
	`version_id` text NOT NULL,
	`path` text NOT NULL,
	`retry` text NOT NULL,
	`source` text NOT NULL,
	`queue` text NOT NULL,
	`status` text NOT NULL,
	`input` text,
	`attempts` integer DEFAULT 0 NOT NULL,
	`invocation_id` text,
	`http_status` integer,
	`result_type` text,
	`result_digest` text,
	`result_inline` blob,
	`result_blob` text,
	`error` text,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL,
	`finished_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `batch_items_batch_seq` ON `batch_items` (`batch_id`,`seq`);--> statement-breakpoint
CREATE INDEX `batch_items_batch_status` ON `batch_items` (`batch_id`,`status`);--> statement-breakpoint
CREATE INDEX `batch_items_status` ON `batch_items` (`status`,`source`);--> statement-breakpoint
CREATE TABLE `batches` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant_id` text NOT NULL,
	`function_id` text NOT NULL,
	`function_name` text NOT NULL,
	`version_id` text NOT NULL,
	`path` text NOT NULL,
	`total` integer NOT NULL,
	`created_at` integer DEFAULT (cast(unixepoch('subsec') * 1000 as integer)) NOT NULL
);
--> statement-breakpoint
CREATE INDEX `batches_tenant` ON `batches` (`tenant_id`,`created_at`);