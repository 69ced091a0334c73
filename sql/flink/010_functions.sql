-- Java UDFs from udfs/java (mlvigil-udfs.jar): per-event work stays in the JVM.
CREATE TEMPORARY SYSTEM FUNCTION mlv_event_time AS 'io.mlvigil.udf.EventTimeFunction' LANGUAGE JAVA;
CREATE TEMPORARY SYSTEM FUNCTION mlv_parse AS 'io.mlvigil.udf.ParseEventFunction' LANGUAGE JAVA;
CREATE TEMPORARY SYSTEM FUNCTION mlv_is_late AS 'io.mlvigil.udf.IsLateFunction' LANGUAGE JAVA;
CREATE TEMPORARY SYSTEM FUNCTION mlv_window_stats AS 'io.mlvigil.udf.WindowStatsFunction' LANGUAGE JAVA;
