ALTER TABLE `enclaves` ADD `public_key` blob;--> statement-breakpoint
ALTER TABLE `stage_executions` ADD `bound_metadata` blob;